"""Anomaly-detection benchmark on 22 sets in two halves: our four kinds against PyOD and IsolationForest.

    python -m bench.anomaly [--half odds|adbench|both] [--datasets cardio wbc] [--seeds 3] [--quick]
                            [--set key=value ...] [--out bench/results]

The halves are the ten ODDS sets of ../shared/data/odds and the twelve ADBench sets of
../shared/data/adbench (paths relative to the repository root's parent; a missing file is an
error, never a skipped set). Defaults are chosen on one half and confirmed on the other: the
report gives every figure per half. `--quick`: one seed, sets subsampled (stratified) to at
most 3000 rows, for iteration; `--set trim=0.2` passes a TrainConfig override to our kinds;
`--jobs 2` (the default on 2 or more cores) runs two cells at once, each in its own process on one
thread, so that a fit's seconds stay one core's.

The protocol of ../shared/data/README.md: for each seed a stratified 60/40 split
(`train_test_split(stratify=y, random_state=seed)`), every detector fitted on the train split
with its outliers and without its labels, ROC AUC and average precision of its scores on the
test split. Per detector: the mean over sets, the seed spread (std over seeds, averaged over
sets) and the training seconds per model (fit only; scoring apart).

Our kinds go through the same path as `latentserve train`: the raw train rows are written to a
.npy, `training.pipeline` prepares and fits them with the default `TrainConfig`, the checkpoint is
exported into a temporary model repository, and the test rows are scored by the service's
`Predictor.anomaly_score` on the exported ONNX graphs. They do their own preprocessing (it is part of the
artifact); the baselines get the protocol's standardisation fitted on the train split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
HALVES: dict[str, tuple[str, ...]] = {
    "odds": ("arrhythmia", "cardio", "glass", "ionosphere", "letter", "pima", "satimage-2", "shuttle", "vowels", "wbc"),
    "adbench": (
        "annthyroid", "breastw", "cardiotocography", "hepatitis", "internetads", "magic-gamma",
        "mammography", "pageblocks", "thyroid", "wdbc", "wilt", "wine",
    ),
}  # fmt: skip
HALF_OF = {d: half for half, names in HALVES.items() for d in names}
DATASETS = tuple(HALF_OF)
QUICK_ROWS = 3000
OURS = ("ae", "rae", "vae", "gan")
BASELINES = ("pyod-ae", "pyod-vae", "iforest")
# Measured on this machine with the defaults of the issue (3 seeds): the bars to clear.
ISSUE_BASELINES = {"iforest": 0.837, "pyod-ae": 0.836, "pyod-vae": 0.802, "best-of-baselines": 0.867}

# (x_train, x_test, seed, workdir) -> (scores, training seconds, served threshold or None for baselines)
Scorer = Callable[[np.ndarray, np.ndarray, int, Path], tuple[np.ndarray, float, float | None]]


def score_ours(
    kind: str, x_train: np.ndarray, x_test: np.ndarray, seed: int, workdir: Path, **overrides
) -> tuple[np.ndarray, float, float]:
    """Train `kind` with the project's defaults as `latentserve train` does (pipeline.run, without
    the run folder's figures), then score the test rows through the service's predictor. Seconds:
    the fit (every member of an ensemble), not the export."""
    from artifact.manifest import Manifest
    from training import pipeline
    from training.config import TrainConfig

    data = workdir / "train.npy"
    np.save(data, x_train)
    cfg = TrainConfig(
        kind=kind,
        name=f"bench-{kind}",
        data=str(data),
        models=str(workdir / "models"),
        runs=str(workdir / "runs"),
        seed=seed,
        allow_constant=True,
        **overrides,
    )
    result = pipeline.run(cfg, progress=False, plots=False)
    assert result is not None
    threshold = Manifest.read(result.artifact).calibration.threshold
    return served_scores(result.artifact, x_test), result.fit_seconds, threshold


def served_scores(artifact: Path, x: np.ndarray, runtime: str = "onnx") -> np.ndarray:
    """The service's scores for raw rows: its predictor loads (and verifies) the artifact and scores
    by the method its manifest names (artifact.scores.anomaly_scores, as the calibration was)."""
    from artifact.predictor import Predictor

    return Predictor.open(artifact, runtime, max_rows=len(x)).anomaly_score(x).scores


def _standardised(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test)


def score_pyod(
    name: str, x_train: np.ndarray, x_test: np.ndarray, seed: int, workdir: Path
) -> tuple[np.ndarray, float, None]:
    """PyOD's AutoEncoder or VAE with its defaults (random_state = seed, quiet), on standardised rows."""
    if name == "pyod-ae":
        from pyod.models.auto_encoder import AutoEncoder as Detector
    else:
        from pyod.models.vae import VAE as Detector
    xs, xq = _standardised(x_train, x_test)
    start = time.perf_counter()
    detector = Detector(random_state=seed, verbose=0).fit(xs)
    seconds = time.perf_counter() - start
    return detector.decision_function(xq), seconds, None


def score_iforest(x_train: np.ndarray, x_test: np.ndarray, seed: int, workdir: Path) -> tuple[np.ndarray, float, None]:
    from sklearn.ensemble import IsolationForest

    xs, xq = _standardised(x_train, x_test)
    start = time.perf_counter()
    detector = IsolationForest(random_state=seed).fit(xs)
    seconds = time.perf_counter() - start
    return -detector.score_samples(xq), seconds, None  # higher = more anomalous


def detectors(names: list[str], overrides: dict | None = None) -> dict[str, Scorer]:
    table: dict[str, Scorer] = {k: partial(score_ours, k, **(overrides or {})) for k in OURS}
    table.update({k: partial(score_pyod, k) for k in ("pyod-ae", "pyod-vae")}, iforest=score_iforest)
    return {n: table[n] for n in names}


@dataclass
class Cell:
    """One (dataset, detector): per seed an AUC, an average precision and the training seconds; seed 0's ROC."""

    aucs: list[float] = field(default_factory=list)
    aps: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    roc: tuple[np.ndarray, np.ndarray] | None = None
    # ours: the share of the test split's inliers flagged at the served threshold (rows no training saw)
    flagged: list[float] = field(default_factory=list)


def path_of(name: str) -> Path:
    return DATA_ROOT / HALF_OF[name] / f"{name}.npz"


def check_data(datasets: list[str]) -> None:
    """Fail loudly, before anything runs, when a set is missing: a benchmark on fewer sets is another benchmark."""
    missing = [str(path_of(d)) for d in datasets if not path_of(d).is_file()]
    if missing:
        raise SystemExit(f"bench.anomaly: missing data files (expected under {DATA_ROOT}): {', '.join(missing)}")


def load(name: str, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A set's rows and labels; with `max_rows`, a stratified subsample of that many (fixed seed)."""
    with np.load(path_of(name)) as d:
        x, y = d["X"].astype(np.float32), d["y"].astype(int)
    if max_rows is not None and len(x) > max_rows:
        x, _, y, _ = train_test_split(x, y, train_size=max_rows, stratify=y, random_state=12345)
    return x, y


def _cell(
    ds: str, seed: int, name: str, max_rows: int | None, overrides: dict | None, split_seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, float, float | None]:
    """One (set, seed, detector): (test labels, scores, training seconds, served threshold or None).
    `split_seed`: the split's seed for every seed (only the detector's seed varies), else `seed`.
    A module-level function, so that `--jobs` worker processes can run it."""
    x, y = load(ds, max_rows)
    split = seed if split_seed is None else split_seed
    x_train, x_test, _y_train, y_test = train_test_split(x, y, test_size=0.4, stratify=y, random_state=split)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores, seconds, threshold = detectors([name], overrides)[name](x_train, x_test, seed, Path(tmp))
    return y_test, scores, seconds, threshold  # _y_train is never passed on


def _one_thread() -> None:
    """Each worker process (and the run itself): one thread for torch and OpenMP, as the fits are timed."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def run(
    datasets: list[str],
    names: list[str],
    seeds: int,
    log=print,
    max_rows: int | None = None,
    overrides: dict | None = None,
    journal: Path | None = None,
    reused: dict[tuple[str, str], Cell] | None = None,
    jobs: int = 1,
    split_seed: int | None = None,
) -> dict[tuple[str, str], Cell]:
    """Every (set, detector) cell; those in `reused` (an earlier run's journal) are not run again.
    Each finished seed is appended to `journal` (JSON lines), so that an interrupted run keeps its figures.
    `jobs` > 1: that many worker processes, one cell each at a time (one thread each)."""
    cells: dict[tuple[str, str], Cell] = {k: v for k, v in (reused or {}).items() if k[0] in datasets}
    tasks = [
        (ds, seed, name)
        for ds in datasets
        for seed in range(seeds)
        for name in names
        if not ((ds, name) in cells and seed in cells[ds, name].seeds)  # reused from a journal
    ]

    def record(ds: str, seed: int, name: str, y_test, scores, seconds: float, threshold: float | None) -> None:
        cell = cells.setdefault((ds, name), Cell())
        if threshold is not None:
            cell.flagged.append(float((scores[y_test == 0] > threshold).mean()))
        cell.aucs.append(float(roc_auc_score(y_test, scores)))
        cell.aps.append(float(average_precision_score(y_test, scores)))
        cell.seconds.append(seconds)
        cell.seeds.append(seed)
        if seed == 0:
            fpr, tpr, _ = roc_curve(y_test, scores)
            cell.roc = (fpr, tpr)
        log(f"{ds:16s} seed {seed} {name:8s} AUC {cell.aucs[-1]:.3f} AP {cell.aps[-1]:.3f} (train {seconds:.1f} s)")
        if journal is not None:
            entry = {"set": ds, "detector": name, "seed": seed, "auc": cell.aucs[-1], "ap": cell.aps[-1]}
            if name in OURS:  # a journal's cells of ours are reused only under the same overrides
                entry["overrides"] = overrides or {}
            if threshold is not None:
                entry["flagged"] = cell.flagged[-1]
            with open(journal, "a") as f:
                f.write(json.dumps({**entry, "seconds": seconds}) + "\n")

    if jobs <= 1:
        for ds, seed, name in tasks:
            record(ds, seed, name, *_cell(ds, seed, name, max_rows, overrides, split_seed))
        return cells
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (forking a process that has run torch can deadlock)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_one_thread) as pool:
        futures = {
            pool.submit(_cell, ds, seed, name, max_rows, overrides, split_seed): (ds, seed, name)
            for ds, seed, name in tasks
        }
        for future in as_completed(futures):
            record(*futures[future], *future.result())
    return cells


def read_journal(paths: list[Path], overrides: dict | None = None) -> dict[tuple[str, str], Cell]:
    """Cells from earlier runs' journals (cells.jsonl), e.g. the baselines, which no default of ours
    changes; cells of our kinds only when they ran under the same `overrides` (none recorded: none)."""
    cells: dict[tuple[str, str], Cell] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e["detector"] in OURS and e.get("overrides", {}) != (overrides or {}):
                continue
            cell = cells.setdefault((e["set"], e["detector"]), Cell())
            cell.aucs.append(e["auc"])
            cell.aps.append(e["ap"])
            cell.seconds.append(e["seconds"])
            cell.seeds.append(e["seed"])
            if "flagged" in e:
                cell.flagged.append(e["flagged"])
    return cells


def means(cells: dict[tuple[str, str], Cell], datasets: list[str], names: list[str], metric: str = "aucs") -> dict:
    """Mean over datasets of the per-dataset mean (of `metric`); plus the best of the baselines per dataset."""
    out = {n: float(np.mean([np.mean(getattr(cells[d, n], metric)) for d in datasets])) for n in names}
    base = [n for n in names if n in BASELINES]
    if base:
        out["best-of-baselines"] = float(
            np.mean([max(np.mean(getattr(cells[d, n], metric)) for n in base) for d in datasets])
        )
    return out


def spread(cells, datasets: list[str], name: str) -> float:
    """Seed spread: the std of the AUC over seeds, averaged over the sets."""
    return float(np.mean([np.std(cells[d, name].aucs) for d in datasets]))


def summary(cells, datasets: list[str], names: list[str]) -> list[str]:
    """Per half: mean AUC, mean AP, seed spread, mean and max training seconds; the targets beside them."""
    lines = []
    for half, members in HALVES.items():
        sets = [d for d in datasets if d in members]
        if not sets:
            continue
        auc, ap = means(cells, sets, names), means(cells, sets, names, "aps")
        lines += [
            f"**{half}** ({len(sets)} sets)",
            "",
            "| detector | mean ROC AUC | mean AP | seed spread | train s (mean / max) |",
            "|---|---|---|---|---|",
        ]
        for n in names:
            secs = [s for d in sets for s in cells[d, n].seconds]
            lines.append(
                f"| {n} | {auc[n]:.3f} | {ap[n]:.3f} | {spread(cells, sets, n):.3f} | "
                f"{np.mean(secs):.1f} / {np.max(secs):.1f} |"
            )
        flagged = {n: [f for d in sets for f in cells[d, n].flagged] for n in names}
        if any(flagged.values()):
            shares = ", ".join(f"{n} {100 * np.mean(v):.1f} %" for n, v in flagged.items() if v)
            lines.append(
                f"| test inliers flagged at the served threshold (default contamination 10 %): {shares} | | | | |"
            )
        if "best-of-baselines" in auc:
            lines.append(
                f"| best of the baselines per set | {auc['best-of-baselines']:.3f} | {ap['best-of-baselines']:.3f} | | |"
            )
        lines.append("")
    return lines


def markdown(cells, datasets: list[str], names: list[str], seeds: int, wall: float) -> str:
    lines = [
        f"ROC AUC / average precision on the test split, mean over {seeds} seed(s), ± the std of the AUC over "
        "seeds; training seconds per model in brackets.",
        "",
        *summary(cells, datasets, names),
        "| dataset | half | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for d in datasets:
        row = [
            f"{np.mean(cells[d, n].aucs):.3f} / {np.mean(cells[d, n].aps):.3f} ± {np.std(cells[d, n].aucs):.3f} "
            f"({np.mean(cells[d, n].seconds):.1f} s)"
            for n in names
        ]
        lines.append(f"| {d} | {HALF_OF[d]} | " + " | ".join(row) + " |")
    lines += ["", f"Wall time of the run: {wall / 60:.1f} min.", ""]
    return "\n".join(lines)


def roc_figure(cells, datasets: list[str], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, d in zip(axes.flat, datasets):
        for n in names:
            if cells[d, n].roc is None:  # a cell reused from a journal
                continue
            fpr, tpr = cells[d, n].roc
            ax.plot(fpr, tpr, lw=1.0, ls="-" if n in OURS else "--", label=n)
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.5)
        ax.set_title(d, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(datasets) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.supxlabel("false positive rate (seed 0)", fontsize=8)
    fig.supylabel("true positive rate", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    from PIL import Image  # matplotlib's own dependency: a 64-colour palette makes the PNG 3x smaller

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anomaly", description=__doc__.split("\n")[0])
    parser.add_argument("--half", choices=[*HALVES, "both"], default="both", help="which half of the sets")
    parser.add_argument("--datasets", nargs="+", default=None, choices=DATASETS, help="these sets instead")
    parser.add_argument("--detectors", nargs="+", default=[*OURS, *BASELINES], choices=[*OURS, *BASELINES])
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1, one split and one fit each (default 3; --quick: 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"one seed unless --seeds, sets subsampled to {QUICK_ROWS} rows"
    )
    parser.add_argument(
        "--reuse", nargs="+", type=Path, default=[], help="cells.jsonl of earlier runs: their cells are not rerun"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig override for our kinds (JSON value)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="cells run at once, each in its own process on one thread (default: 2, or 1 on one core)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="one split for every seed (only the detectors' seeds vary): the model's share of the seed spread",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for results.md and roc.png")
    args = parser.parse_args(argv)
    if args.split_seed is not None and args.reuse:
        parser.error("--split-seed with --reuse: a journal's cells were scored on other splits")
    datasets = args.datasets or (list(DATASETS) if args.half == "both" else list(HALVES[args.half]))
    check_data(datasets)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    seeds, max_rows = (args.seeds or 1, QUICK_ROWS) if args.quick else (args.seeds or 3, None)

    _one_thread()  # small MLPs; the machine is shared
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    journal = args.out / "cells.jsonl"
    journal.unlink(missing_ok=True)
    reused = read_journal(args.reuse, overrides)
    log = partial(print, flush=True)
    cells = run(datasets, args.detectors, seeds, log, max_rows, overrides, journal, reused, args.jobs, args.split_seed)
    wall = time.perf_counter() - start
    names = [n for n in (*OURS, *BASELINES) if n in args.detectors or all((d, n) in cells for d in datasets)]
    text = markdown(cells, datasets, names, seeds, wall)
    if overrides or args.quick:
        text = f"Overrides {overrides}, quick={args.quick}.\n\n" + text
    (args.out / "results.md").write_text(text)
    roc_figure(cells, datasets, names, args.out / "roc.png")
    print(f"\nwrote {args.out / 'results.md'} and {args.out / 'roc.png'} ({wall / 60:.1f} min)")
    print("\n".join(summary(cells, datasets, names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
