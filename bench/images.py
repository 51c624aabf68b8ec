"""One-class AUROC on image data through the image path: train on one digit class, score all digits.

    python -m bench.images [--kinds ae vae] [--classes 0 1 2 ...]

Data: scikit-learn's bundled 8×8 digits (1797 images, shipped by the package, no download), saved
as an (N, 8, 8) uint8-range array exactly as a user would pass it (`--data digits.npy`, no other
flag): pixel scaling, BCE / Bernoulli. Per class c: a stratified 60/40 split of all digits; our
kinds and IsolationForest (on the raw pixels) are fitted on the class-c rows of the 60 %, and
scored on the whole 40 %, where every other class is the anomaly. Scores through the exported
ONNX graphs (bench.anomaly.served_scores). Not the issue's MNIST-sized benchmark (10,000 × 784):
no MNIST is available offline here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split


def ours(kind: str, train: np.ndarray, test: np.ndarray, workdir: Path) -> tuple[np.ndarray, float]:
    from bench.anomaly import served_scores
    from training import pipeline
    from training.config import TrainConfig

    np.save(workdir / "train.npy", train)
    data, models, runs = str(workdir / "train.npy"), str(workdir / "m"), str(workdir / "r")
    start = time.perf_counter()  # the whole `latentserve train`: fit, plots, export
    result = pipeline.run(TrainConfig(kind=kind, name=f"oc-{kind}", data=data, models=models, runs=runs), False)
    return served_scores(result.artifact, test.reshape(len(test), -1).astype(np.float32)), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.images", description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["ae", "vae"])
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    digits = load_digits()
    x, y = digits.images.astype(np.uint8), digits.target  # (1797, 8, 8), pixels 0..16
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.4, stratify=y, random_state=0)
    names = [*args.kinds, "iforest"]
    print("| class | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|")
    aucs: dict[str, list[float]] = {n: [] for n in names}
    for c in args.classes:
        train, anomalous = x_train[y_train == c], (y_test != c).astype(int)
        row = []
        for kind in args.kinds:
            with tempfile.TemporaryDirectory(prefix="oc-") as tmp:
                scores, seconds = ours(kind, train, x_test, Path(tmp))
            aucs[kind].append(roc_auc_score(anomalous, scores))
            row.append(f"{aucs[kind][-1]:.3f} ({seconds:.0f} s)")
        forest = IsolationForest(random_state=0).fit(train.reshape(len(train), -1))
        aucs["iforest"].append(roc_auc_score(anomalous, -forest.score_samples(x_test.reshape(len(x_test), -1))))
        row.append(f"{aucs['iforest'][-1]:.3f}")
        print(f"| {c} | " + " | ".join(row) + " |", flush=True)
    print("| **mean** | " + " | ".join(f"**{np.mean(aucs[n]):.3f}**" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
