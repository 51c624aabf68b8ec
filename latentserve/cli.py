"""`latentserve COMMAND ...`: `serve` runs the HTTP service; the other commands belong to the offline half.

The offline half is imported only when used, so that `serve` runs from an install without torch.
"""

from __future__ import annotations

import sys

SERVICE_COMMANDS = ("serve",)
TRAINING_COMMANDS = ("train", "export", "evaluate", "export-triton")
USAGE = """\
usage: latentserve serve [--models DIR] [--host H] [--port P] [--runtime onnx|torchscript] [--device cpu|cuda]
                         [--workers N] [--engine uvicorn|ray] [--replicas N] [...]
       latentserve train KIND --data SOURCE --name NAME [...]   (see latentserve train --help)
       latentserve export CHECKPOINT [...]                      (see latentserve export --help)
       latentserve evaluate MODEL --data SOURCE [--labels COL]  (see latentserve evaluate --help)
       latentserve export-triton MODEL --out DIR [...]          (see latentserve export-triton --help)"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in SERVICE_COMMANDS:
        from service.cli import serve

        return serve(rest)
    if command in TRAINING_COMMANDS:
        try:
            from training.cli import main as training_main
        except ImportError as e:
            print(
                f"latentserve {command} needs the training dependencies (pip install 'latentserve[train]'): {e}",
                file=sys.stderr,
            )
            return 2
        return training_main(argv)
    print(f"latentserve: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
