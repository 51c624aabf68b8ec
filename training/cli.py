"""`latentserve train` and `latentserve export`: the offline half's command line.

Flags map one to one onto `TrainConfig` fields. Every refusal is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from training.config import KINDS, TrainConfig

DEFAULT_MODELS = "model_repository"


def _models_default() -> str:
    return os.environ.get("LATENTSERVE_MODELS", DEFAULT_MODELS)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 128,64, got {text!r}") from None
    return sizes


def _columns(text: str) -> tuple[str, ...]:
    from training.columns import parse_columns

    try:
        return parse_columns(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _image_shape(text: str) -> tuple[int, ...]:
    from training.images import parse_image_shape

    try:
        return parse_image_shape(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentserve", description="Train and export latentserve models.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and export it to the model repository")
    t.add_argument("kind", help=f"model kind: {', '.join(KINDS)}")
    t.add_argument("--data", default="digits", help="'digits' (bundled) or a .csv/.npy/.npz file")
    t.add_argument("--name", required=True, help="model name in the repository")
    t.add_argument(
        "--models", default=None, help="model repository (default $LATENTSERVE_MODELS or ./model_repository)"
    )
    t.add_argument("--runs", default="runs", help="folder for run folders (checkpoint, metrics, plots)")
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for opt, typ, help_ in [
        ("epochs", int, "epochs (default: a budget of gradient steps, whatever the row count)"),
        ("patience", int, "epochs without validation improvement before stopping (default: no early stop)"),
        ("batch-size", int, "rows per batch (default: 64, or half the training rows when fewer than 128)"),
        ("lr", float, "learning rate η"),
        ("optimizer", str, "adam or sgd"),
        ("seed", int, "random seed (same seed and data → same weights)"),
        ("val-fraction", float, "fraction of the non-calibration rows held out for early stopping"),
        ("calibration-fraction", float, "fraction of rows held out first, for the anomaly threshold only"),
        ("contamination", float, "expected outlier share; sets the default anomaly threshold"),
        ("device", str, "auto, cpu or cuda"),
        ("threads", int, "torch CPU threads"),
        ("latent-dim", int, "latent size (default: from the feature count)"),
        ("activation", str, "relu, tanh, leaky_relu, elu or gelu"),
        (
            "scaling",
            str,
            "auto (robust for the vae on tables, standard else; pixel range for images), standard, robust, minmax or none",
        ),
        ("reconstruction", str, "ae/rae: mse or bce (default: bce for pixels, mse for tables)"),
        ("penalty", str, "rae: l1 or l2"),
        ("lam", float, "rae: penalty weight λ"),
        ("likelihood", str, "vae: gaussian or bernoulli"),
        ("beta", float, "vae: KL weight β"),
        ("trim", float, "ae/rae/vae: share of each batch's costliest rows left out (default: --contamination)"),
        ("noise", str, "vae: σ of p(x|z): unit, shared or feature (default: feature on standardised data)"),
        (
            "score",
            str,
            "anomaly score: ae/rae balanced (the ae's default on tables), joint or reconstruction, "
            "vae elbo-draws or elbo, gan search or discriminator",
        ),
        (
            "ensemble",
            int,
            "train N models (seeds seed + 1000·i) served as one: the mean of their scores, each "
            "z-normalised on the calibration rows (default: 3 for the ae on tables, else 1)",
        ),
    ]:
        dest = opt.replace("-", "_")
        t.add_argument(f"--{opt}", type=typ, default=defaults[dest], help=help_)
    t.add_argument(
        "--hidden", type=_hidden, default=None, help="hidden sizes, e.g. 128,64 (default: from the feature count)"
    )
    t.add_argument(
        "--no-spectral-norm",
        dest="spectral_norm",
        action="store_false",
        help="gan: train D without spectral normalisation",
    )
    t.add_argument("--allow-constant", action="store_true", help="keep zero-variance columns instead of refusing")
    t.add_argument(
        "--columns",
        type=_columns,
        default=None,
        help="the table's feature columns: header names or positions from 1, e.g. sepal_length,petal_width or 2,3",
    )
    t.add_argument(
        "--drop-columns",
        type=_columns,
        default=None,
        help="columns to leave out (ids, labels), by name or position from 1, e.g. sample_id,cultivar",
    )
    t.add_argument(
        "--image-shape",
        type=_image_shape,
        default=None,
        help="H,W or H,W,C: the rows of an (N, F) array are images of this shape (pixels scaled by their range)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("export", help="export a run's checkpoint.pt as a new version")
    e.add_argument("checkpoint", help="path to a run folder's checkpoint.pt")
    e.add_argument("--models", default=None, help="model repository")
    e.add_argument("--name", default=None, help="publish under this name (default: the trained name)")
    x = sub.add_parser("export-triton", help="write a Triton model repository of a model's ONNX graphs")
    x.add_argument("model", help="model name in --models, or the path of a model folder (<models>/<name>)")
    x.add_argument("--models", default=None, help="model repository")
    x.add_argument("--out", required=True, help="Triton model repository to write into")
    x.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="Triton max_batch_size (default $LATENTSERVE_MAX_BATCH_ROWS or 1024)",
    )
    x.add_argument(
        "--no-fused",
        dest="fused",
        action="store_false",
        help="leave out <name>__score, the fused scoring graph (raw x in, score and is_anomaly out)",
    )

    from training.evaluate import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_rank = os.environ.get("RANK", "0") not in ("", "0")  # under torchrun only rank 0 speaks
    level = logging.WARNING if quiet_rank else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "evaluate":  # torch-free: runs the exported ONNX artifact
        return _evaluate(args)
    # Imported here so that `--help` and argument errors answer without loading torch.
    from training.config import ConfigError
    from training.data import DataError
    from training.export import ExportError

    try:
        if args.command == "export":
            return _export(args)
        if args.command == "export-triton":
            return _export_triton(args)
        return _train(args)
    except (DataError, ConfigError, ExportError, RuntimeError) as e:
        if not quiet_rank:
            print(f"latentserve {args.command}: error: {e}", file=sys.stderr)
        return 2


def _evaluate(args) -> int:
    from training.data import DataError
    from training.evaluate import EvaluateError, run
    from training.predictor import ModelRefused

    logging.getLogger("service").setLevel(logging.WARNING)  # the report names the model; no load chatter
    try:
        return run(args)
    except (DataError, EvaluateError, ModelRefused, OSError) as e:
        print(f"latentserve evaluate: error: {e}", file=sys.stderr)
        return 2


def _train(args) -> int:
    from artifact.manifest import valid_name
    from training import pipeline
    from training.config import ConfigError
    from training.distributed import Context

    if not valid_name(args.name):
        raise ConfigError(f"--name must be letters, digits, '_', '.', '-' (got {args.name!r})")
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["models"] = args.models or _models_default()
    cfg = TrainConfig(**values)
    cfg.check()  # every rank refuses a bad option alike, before any waits for another
    ctx = Context.from_env(cfg.device, cfg.batch_size)  # torchrun: joins the process group
    try:
        result = pipeline.run(cfg, progress=not args.quiet, ctx=ctx)
    finally:
        ctx.close()
    if result is not None:  # rank 0 (or the only process)
        print(f"exported {result.artifact} (run folder {result.run_dir})")
    return 0


def _export(args) -> int:
    from artifact.manifest import valid_name
    from training.export import export_checkpoint, load_checkpoint

    if args.name is not None and not valid_name(args.name):
        print(f"latentserve export: error: invalid --name {args.name!r}", file=sys.stderr)
        return 2
    ckpt = load_checkpoint(Path(args.checkpoint))
    path = export_checkpoint(ckpt, Path(args.models or _models_default()), args.name)
    print(f"exported {path}")
    return 0


def _export_triton(args) -> int:
    from training.triton import DEFAULT_MAX_BATCH_SIZE, TritonExportError, export_triton

    folder = Path(args.model)
    if args.models is not None or not (folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())):
        folder = Path(args.models or _models_default()) / args.model
    if not folder.is_dir():
        print(f"latentserve export-triton: error: no model folder {folder}", file=sys.stderr)
        return 2
    try:
        # The server's batching limit, when set here, else its default: Triton batches as latentserve does.
        default = int(os.environ.get("LATENTSERVE_MAX_BATCH_ROWS", DEFAULT_MAX_BATCH_SIZE))
        written = export_triton(folder, Path(args.out), args.max_batch_size or default, fused=args.fused)
    except TritonExportError as e:
        print(f"latentserve export-triton: error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
