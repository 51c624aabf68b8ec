"""PNG figures for `latentserve evaluate` (matplotlib, no torch): image grids, ROC/PR curves, score
histograms, latent scatter plots and bar charts. Each function writes one file and returns nothing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 80


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def image_grid(
    path: Path, rows: list[np.ndarray], labels: list[str], shape: tuple[int, int], vrange: tuple[float, float]
) -> None:
    """One grid row per array of flat images (n, H·W), each row titled by its label."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(0.7 * n, 0.8 * len(rows) + 0.2), squeeze=False)
    for i, (images, label) in enumerate(zip(rows, labels)):
        for j in range(n):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(images):
                ax.imshow(images[j].reshape(shape), cmap="gray_r", vmin=vrange[0], vmax=vrange[1])
        axes[i][0].set_title(label, fontsize=8, loc="left")
    _save(fig, path)


def roc_pr(
    path: Path, fpr: np.ndarray, tpr: np.ndarray, precision: np.ndarray, recall: np.ndarray, base: float
) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.4))
    a.plot(fpr, tpr)
    a.plot([0, 1], [0, 1], "k:", lw=0.8)
    a.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    b.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post")
    b.axhline(base, color="k", ls=":", lw=0.8, label=f"base rate {base:.3f}")
    b.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    b.legend(fontsize=8)
    _save(fig, path)


def score_histogram(path: Path, scores: np.ndarray, labels: np.ndarray | None, threshold: float) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bins = np.histogram_bin_edges(scores, bins=60)
    if labels is None:
        ax.hist(scores, bins=bins, color="tab:blue", alpha=0.8, label="all rows")
    else:
        ax.hist(scores[labels == 0], bins=bins, alpha=0.6, density=True, label="label 0 (normal)")
        ax.hist(scores[labels == 1], bins=bins, alpha=0.6, density=True, label="label 1 (anomaly)")
    ax.axvline(threshold, color="k", ls="--", label=f"served threshold {threshold:.4g}")
    ax.set(xlabel="anomaly score", ylabel="density" if labels is not None else "rows")
    ax.legend(fontsize=8)
    _save(fig, path)


def latent_scatter(path: Path, proj: np.ndarray, labels: np.ndarray | None, ratio: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    if labels is None:
        ax.scatter(proj[:, 0], proj[:, 1], s=4, alpha=0.6)
    else:
        for value, colour in ((0, "tab:blue"), (1, "tab:red")):
            keep = labels == value
            ax.scatter(
                proj[keep, 0], proj[keep, 1], s=4 if value == 0 else 10, c=colour, alpha=0.6, label=f"label {value}"
            )
        ax.legend(fontsize=8)
    ax.set(xlabel=f"PC1 ({100 * ratio[0]:.0f} % of variance)", ylabel=f"PC2 ({100 * ratio[1]:.0f} %)")
    _save(fig, path)


def bars(path: Path, series: dict[str, np.ndarray], xlabel: str, ylabel: str, names: list[str] | None = None) -> None:
    """Grouped bars, one group per index (feature or latent unit)."""
    width = 0.8 / len(series)
    n = len(next(iter(series.values())))
    fig, ax = plt.subplots(figsize=(min(12, 2 + 0.18 * n * len(series)), 3.2))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(n) + i * width, values, width, label=label)
    if names is not None and n <= 40:
        ax.set_xticks(np.arange(n) + 0.4 - width / 2, names, rotation=90, fontsize=7)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)


def distance_histogram(path: Path, samples: np.ndarray, real: np.ndarray) -> None:
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.histogram_bin_edges(np.r_[samples, real], bins=50)
    ax.hist(real, bins=bins, alpha=0.6, density=True, label="held-out real rows")
    ax.hist(samples, bins=bins, alpha=0.6, density=True, label="generated rows")
    ax.set(xlabel="distance to the nearest reference row (model space)", ylabel="density")
    ax.legend(fontsize=8)
    _save(fig, path)
