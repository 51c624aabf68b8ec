"""`latentserve`: `serve` runs the HTTP service; `train` and `export` belong to the offline half.

`train`/`export` import `training.cli` only when used, so that `serve` runs from an
install without torch. Settings come from LATENTSERVE_* variables; flags override them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from pydantic import ValidationError

TRAINING_COMMANDS = ("train", "export", "export-triton")
USAGE = """\
usage: latentserve serve [--models DIR] [--host H] [--port P] [--runtime onnx|torchscript] [--device cpu|cuda]
       latentserve train KIND --data SOURCE --name NAME [...]   (see latentserve train --help)
       latentserve export CHECKPOINT [...]                      (see latentserve export --help)
       latentserve export-triton MODEL --out DIR [...]          (see latentserve export-triton --help)"""


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latentserve serve",
        description="Serve every model in the repository over HTTP. Each flag overrides its "
        "LATENTSERVE_* environment variable (e.g. --port and LATENTSERVE_PORT).",
    )
    p.add_argument("--models", help="model repository folder (default ./model_repository)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 to expose)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--runtime", choices=["onnx", "torchscript"], help="graph runtime (default onnx)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="device (default cpu)")
    p.add_argument("--threads", type=int, help="intra-op threads per graph (default 1)")
    p.add_argument("--max-rows", type=int, help="rows per request (default 10000)")
    p.add_argument("--max-body-bytes", type=int, help="request body size limit (default 16 MiB)")
    p.add_argument("--batching", action=argparse.BooleanOptionalAction, help="micro-batching (default on)")
    p.add_argument("--max-batch-rows", type=int, help="rows per batched runtime call (default 1024)")
    p.add_argument("--max-delay-us", type=int, help="how long a batch waits for more requests (default 0)")
    p.add_argument("--max-concurrency", type=int, help="requests in flight before 503 + Retry-After (default 64)")
    p.add_argument("--request-timeout-s", type=float, help="time budget per request before 504 (default 30)")
    p.add_argument("--header-timeout-s", type=float, help="time to send a request's headers (default 10)")
    p.add_argument("--shutdown-delay-s", type=float, help="after SIGTERM: serve, not ready, this long (default 1)")
    p.add_argument("--shutdown-grace-s", type=float, help="then wait this long for requests in flight (default 8)")
    p.add_argument("--cors-origins", help="comma-separated origins allowed by CORS (default: none)")
    # No --api-key flag: a command line is visible to every user of the machine (ps); use LATENTSERVE_API_KEY.
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    return p


def serve(argv: list[str]) -> int:
    args = _serve_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    from service.errors import StartupError
    from service.settings import Settings

    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            where = f"--{field.replace('_', '-')} / LATENTSERVE_{field.upper()}"
            where = where if field != "api_key" else "LATENTSERVE_API_KEY"
            print(f"latentserve serve: invalid setting {field} ({where}): {err['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A SIGTERM before the server runs (models still importing) is a clean exit too; from then on
    # service.lifecycle.Server handles SIGTERM, SIGINT and SIGHUP.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    import uvicorn

    from service.app import create_app
    from service.connections import protocol_class
    from service.lifecycle import Server

    try:
        app = create_app(settings)
    except StartupError as e:
        print(f"latentserve serve: cannot start: {e}", file=sys.stderr)
        return 2
    if not app.state.repository.models:
        print(
            f"latentserve serve: no models in {settings.models}; train one first, e.g. "
            f"latentserve train ae --data digits --name digits-ae --models {settings.models}",
            file=sys.stderr,
        )
        return 2
    logging.getLogger(__name__).info(
        "serving %s on http://%s:%s (%s on %s)",
        settings.models,
        settings.host,
        settings.port,
        settings.runtime,
        settings.device,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]  # a float: asyncio.wait_for
        http=protocol_class(settings.header_timeout_s),
    )
    Server(config, app.state.lifecycle, app.state.repository, settings.shutdown_delay_s).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "serve":
        return serve(rest)
    if command in TRAINING_COMMANDS:
        try:
            from training.cli import main as training_main
        except ImportError as e:
            print(f"latentserve {command} needs the training dependencies (torch): {e}", file=sys.stderr)
            return 2
        return training_main(argv)
    print(f"latentserve: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
