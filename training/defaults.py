"""Train the four default models on the bundled digits, only when the repository holds no model.

`python -m training.defaults --models DIR` is what `make run` and the compose `train` service call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from artifact.manifest import MANIFEST_FILE
from training.config import KINDS, TrainConfig

DEFAULT_NAMES = {kind: f"digits-{kind}" for kind in KINDS}


def has_models(models_dir: Path) -> bool:
    return any(Path(models_dir).glob(f"*/*/{MANIFEST_FILE}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.defaults", description=__doc__)
    parser.add_argument("--models", default="model_repository", help="model repository")
    parser.add_argument("--runs", default="runs", help="folder for run folders")
    parser.add_argument("--epochs", type=int, default=None, help="override the default epochs (smoke tests)")
    parser.add_argument("--force", action="store_true", help="train even when models exist (adds versions)")
    args = parser.parse_args(argv)
    models = Path(args.models)
    if has_models(models) and not args.force:
        print(f"{models} already holds models: nothing to train")
        return 0
    from training import pipeline

    for kind, name in DEFAULT_NAMES.items():
        extra = {"epochs": args.epochs} if args.epochs else {}
        cfg = TrainConfig(kind=kind, name=name, data="digits", models=str(models), runs=args.runs, **extra)
        result = pipeline.run(cfg, progress=sys.stderr.isatty())
        print(f"exported {result.artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
