"""`latentserve evaluate MODEL --data SOURCE [--labels COLUMN|FILE]`: one report on how good a model is,
computed through the artifact the service runs (ONNX graphs + manifest, never the torch checkpoint).

Writes metrics.json, report.md, a self-contained report.html and the PNG figures into --out. No torch is
imported: this runs from an install with scikit-learn, matplotlib and tqdm beside the service.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from artifact.manifest import MANIFEST_FILE, list_versions, valid_name
from training.data import DataError, Dataset, load
from training.predictor import open_predictor

DEFAULT_OUT = "evaluations"


class EvaluateError(ValueError):
    """A refusal of `latentserve evaluate`: one line saying what was expected and what was found."""


def add_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="evaluate a model through its exported artifact; writes a report")
    e.add_argument("model", metavar="MODEL_DIR_OR_NAME", help="a <models>/<name>/<version> folder, or a name")
    e.add_argument("--data", required=True, help="'digits' or a .csv/.npy/.npz file, as for train")
    e.add_argument("--labels", default=None, help="0/1 anomaly labels: a column of the data (name or number) or a file")
    e.add_argument(
        "--models", default=None, help="model repository (default $LATENTSERVE_MODELS or ./model_repository)"
    )
    e.add_argument("--out", default=None, help=f"output folder (default ./{DEFAULT_OUT}/<name>-v<version>)")
    e.add_argument("--iw-samples", type=int, default=64, help="importance samples K of the vae's IWAE bound")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the 95 %% intervals")
    e.add_argument("--seed", type=int, default=0, help="seed of the samples, splits and bootstrap")
    e.add_argument("--threads", type=int, default=1, help="CPU threads for ONNX Runtime and scikit-learn")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_model(target: str, models: str | None) -> Path:
    """A version folder, a model folder (its newest version), or a name in the repository (newest version)."""
    path = Path(target)
    if (path / MANIFEST_FILE).is_file():
        return path
    if path.is_dir() and list_versions(path.parent, path.name):
        return path / str(list_versions(path.parent, path.name)[-1])
    if path.is_dir():
        raise EvaluateError(f"{target} is a folder without {MANIFEST_FILE}: expected <models>/<name>/<version>")
    repo = Path(models or os.environ.get("LATENTSERVE_MODELS", "model_repository"))
    if not valid_name(target):
        raise EvaluateError(f"{target!r} is neither a model folder nor a model name")
    versions = list_versions(repo, target)
    if not versions:
        names = sorted(p.name for p in repo.iterdir() if p.is_dir()) if repo.is_dir() else []
        raise EvaluateError(f"no model named {target!r} in {repo} (models there: {', '.join(names) or 'none'})")
    return repo / target / str(versions[-1])


def split_labels(ds: Dataset, spec: str) -> tuple[Dataset, np.ndarray]:
    """The data without its label column, and the 0/1 labels: a file, an array of the .npz data file (such
    as ODDS's `y`), a column name of the CSV header, or a 1-based column number."""
    if Path(spec).is_file():
        return ds, check_labels(_read_label_file(Path(spec)), len(ds.x), f"labels file {spec}")
    if ds.source.lower().endswith(".npz"):
        with np.load(ds.source, allow_pickle=False) as arrays:
            if spec in arrays.files and spec != "X":
                return ds, check_labels(arrays[spec], len(ds.x), f"labels array {spec!r} of {ds.source}")
    names = ds.feature_names or []
    if spec in names:
        j = names.index(spec)
    elif spec.isdigit() and 1 <= int(spec) <= ds.x.shape[1]:
        j = int(spec) - 1
    else:
        cols = f"columns: {', '.join(names)}" if names else f"{ds.x.shape[1]} unnamed columns"
        raise EvaluateError(f"--labels {spec!r} is neither a file nor a column of {ds.source} ({cols})")
    labels = check_labels(ds.x[:, j], len(ds.x), f"labels column {spec!r}")
    kept = [k for k in range(ds.x.shape[1]) if k != j]
    return replace(ds, x=ds.x[:, kept], feature_names=[names[k] for k in kept] if names else None), labels


def _read_label_file(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False).reshape(-1)
        except ValueError as e:
            raise EvaluateError(f"cannot read labels file {path}: {e}") from None
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if lines and not _number(lines[0].split(",")[0]):
        lines = lines[1:]  # a header
    if not lines:
        raise EvaluateError(f"labels file {path} is empty: expected one 0/1 label per line")
    if any("," in ln or ";" in ln or "\t" in ln for ln in lines):
        raise EvaluateError(f"labels file {path} has several columns: expected one 0/1 label per line")
    bad = next((ln for ln in lines if not _number(ln)), None)
    if bad is not None:
        raise EvaluateError(f"labels file {path} holds {bad!r}: expected one 0/1 label per line")
    return np.array([float(v) for v in lines])


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def check_labels(values: np.ndarray, n_rows: int, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) != n_rows:
        raise EvaluateError(f"{what} has {len(v)} values, the data has {n_rows} rows")
    bad = ~np.isin(v, (0.0, 1.0))
    if bad.any():
        found = ", ".join(f"{x:g}" for x in np.unique(v[bad])[:5])
        raise EvaluateError(
            f"{what} must hold 0 (normal) or 1 (anomaly); row {int(np.argmax(bad)) + 1} holds "
            f"{v[bad][0]:g} (other values found: {found})"
        )
    if v.min() == v.max():
        raise EvaluateError(f"{what} holds only {int(v[0])}s: the anomaly metrics need both 0 and 1")
    return v.astype(np.int64)


def match_columns(ds: Dataset, model_names: list[str] | None) -> tuple[Dataset, str | None]:
    """Put named columns in the order the model was trained on; (data, a note for the report or None).

    A CSV whose header holds the model's feature names in another order is reordered, not misread."""
    if not model_names or not ds.feature_names or ds.feature_names == model_names:
        return ds, None
    if sorted(ds.feature_names) == sorted(model_names):
        order = [ds.feature_names.index(name) for name in model_names]
        return replace(ds, x=ds.x[:, order], feature_names=list(model_names)), (
            "columns: reordered by name into the model's feature order"
        )
    differ = [f"{a!r} (model: {b!r})" for a, b in zip(ds.feature_names, model_names) if a != b]
    return ds, f"columns: the data's names differ from the model's, taken by position: {', '.join(differ[:5])}"


def _same_source(trained: str, evaluated: str) -> bool:
    if "digits" in (trained, evaluated):
        return trained == evaluated
    return Path(trained).resolve() == Path(evaluated).resolve()


def run(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    folder = resolve_model(args.model, args.models)
    for flag, value, least in (
        ("--iw-samples", args.iw_samples, 1),
        ("--bootstrap", args.bootstrap, 10),
        ("--threads", args.threads, 1),
    ):
        if value < least:
            raise EvaluateError(f"{flag} must be at least {least}, got {value}")
    with threadpool_limits(args.threads):
        out, metrics = evaluate(
            folder,
            args.data,
            args.labels,
            args.out,
            args.iw_samples,
            args.seed,
            args.threads,
            not args.quiet,
            args.bootstrap,
        )
    skipped = metrics["skipped"]
    print(
        f"wrote {out / 'report.html'}, report.md and metrics.json"
        + (f" ({len(skipped)} sections skipped: {', '.join(skipped)})" if skipped else "")
    )
    return 0


def evaluate(
    folder: Path,
    source: str,
    labels_spec: str | None,
    out: str | Path | None,
    iw_samples: int = 64,
    seed: int = 0,
    threads: int = 1,
    progress: bool = False,
    n_boot: int = 1000,
) -> tuple[Path, dict]:
    """Evaluate the artifact in `folder` on `source`; returns (out folder, metrics.json's content)."""
    from tqdm import tqdm

    from training import evaluation as ev
    from training import evaluation_scores as evs
    from training.report import Report

    predictor = open_predictor(folder, threads)
    m = predictor.manifest
    ds = load(source)
    labels = None
    if labels_spec is not None:
        ds, labels = split_labels(ds, labels_spec)
    if ds.x.shape[1] != m.n_features:
        raise EvaluateError(
            f"{ds.source} has {ds.x.shape[1]} features per row, the model {m.name!r} version "
            f"{m.version} expects {m.n_features}"
        )
    ds, column_note = match_columns(ds, m.feature_names)
    out = Path(out) if out is not None else Path(DEFAULT_OUT) / f"{m.name}-v{m.version}"
    out.mkdir(parents=True, exist_ok=True)
    ctx = ev.Context(
        predictor,
        ds.x,
        labels,
        out,
        seed=seed,
        iw_samples=iw_samples,
        progress=progress,
        n_boot=n_boot,
        same_source=_same_source(str(m.data.get("source")), ds.source),
    )
    n = len(ds.x)
    plan = [
        ("Reconstruction", lambda bar: ev.reconstruction(ctx), 1),
        ("Likelihood", lambda bar: ev.likelihood(ctx, bar), n if m.kind == "vae" else 1),
        ("Sample quality", lambda bar: ev.sample_quality(ctx, bar), 4),
        ("Anomaly detection", lambda bar: evs.anomaly_detection(ctx, bar), 8),
        ("Threshold check", lambda bar: evs.threshold_check(ctx), 1),
        ("Latent space", lambda bar: ev.latent_space(ctx), 1),
        ("Per-feature contributions", lambda bar: evs.contributions(ctx), 1),
    ]
    sections = []
    for title, step, total in plan:
        with tqdm(total=total, desc=title, disable=not progress, leave=False) as bar:
            sections.append(step(bar))
            bar.update(bar.total - bar.n)
    skipped = {s.title: s.skipped for s in sections if s.skipped}
    data = {
        "source": ds.source,
        "rows": n,
        "features": int(ds.x.shape[1]),
        "labels": labels_spec,
        "anomalies": int(labels.sum()) if labels is not None else None,
        "same_as_training_source": ctx.same_source,
    }
    model = {
        "name": m.name,
        "version": m.version,
        "kind": m.kind,
        "folder": str(folder),
        "runtime": "onnx",
        "likelihood": m.likelihood,
        "score_method": m.calibration.method,
    }
    metrics = {
        "model": model,
        "data": data,
        "seed": seed,
        "created_at": datetime.now(UTC).isoformat(),
        **ctx.metrics,
        "skipped": skipped,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    label_line = (
        f"labels: {labels_spec} ({int(labels.sum())} anomalies)"
        if labels is not None
        else "labels: none given, so the anomaly-detection section is skipped"
    )
    summary = [
        f"model: {m.name} version {m.version} ({m.kind}), {folder}, run through its ONNX graphs",
        f"data: {ds.source}, {n} rows × {ds.x.shape[1]} features"
        + (" (the data it was trained on)" if ctx.same_source else ""),
        label_line,
        *([column_note] if column_note else []),
        f"seed {seed}; written {metrics['created_at'][:19]} UTC; the numbers are in metrics.json",
    ]
    Report(f"Evaluation of {m.name} version {m.version}", summary, sections).write(out)
    return out, metrics


__all__ = ["DataError", "EvaluateError", "add_parser", "evaluate", "run"]
