"""PNG plots for a run folder: loss curves always; for image data, reconstructions and samples."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from artifact import transforms  # noqa: E402
from training.images import channels_last  # noqa: E402


def save_all(run_dir: Path, cfg, ds, result, x_val: np.ndarray, prep) -> None:
    loss_curves(run_dir / "loss_curves.png", result.history, cfg.kind)
    if ds.image_shape is None:
        return
    model = result.model.cpu().eval()
    n = min(16, len(x_val))
    with torch.no_grad():
        if cfg.kind == "gan":
            z = torch.randn(32, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))
            samples = model.generator(z).numpy()
        else:
            out = model.encoder(torch.from_numpy(x_val[:n]))
            z_in = out[0] if isinstance(out, tuple) else out
            recon = model.decoder(z_in).numpy()
            grid(
                run_dir / "reconstructions.png", [x_val[:n], recon], ds.image_shape, prep, ["inputs", "reconstructions"]
            )
            if cfg.kind == "vae":
                z = torch.randn(32, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))
            else:
                zs = model.encoder(torch.from_numpy(x_val))
                mu, sd = zs.mean(0), zs.std(0)
                z = mu + sd * torch.randn(32, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))
            samples = model.decoder(z).numpy()
    grid(run_dir / "samples.png", [samples[:16], samples[16:32]], ds.image_shape, prep, ["samples", ""])


def loss_curves(path: Path, history: list[dict], kind: str) -> None:
    keys = [k for k in history[0] if k != "epoch"]
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(epochs, [h[k] for h in history])
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("epoch")
    fig.suptitle(f"{kind} training")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _picture(row: np.ndarray, shape) -> tuple:
    """imshow's arguments for one row: gray for one channel, RGB(A) scaled to [0, 1] for 3 or 4."""
    img = row.reshape(shape).transpose(channels_last(shape))
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return img, "gray_r"
    lo, hi = float(img.min()), float(img.max())
    return np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1), None


def grid(path: Path, rows: list[np.ndarray], shape, prep, labels: list[str]) -> None:
    """One figure row per array: each image in raw pixel units."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(0.8 * n, 0.9 * len(rows)), squeeze=False)
    for i, (imgs, label) in enumerate(zip(rows, labels)):
        raw = transforms.to_raw_space(imgs, prep)
        for j in range(n):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(raw):
                ax.imshow(*_picture(raw[j], shape))
        axes[i][0].set_title(label, fontsize=8, loc="left")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
