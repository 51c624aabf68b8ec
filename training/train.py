"""Training loops: build a model from a resolved config, fit it with early stopping, keep the history.

ae/rae/vae stop early on the validation cost and restore their best weights; the gan trains for
its epochs (adversarial losses are no convergence criterion) and keeps its final weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from artifact.manifest import Preprocessing
from models import ae, gan, losses, vae
from training.config import TrainConfig


def build_model(cfg: TrainConfig, n_features: int) -> nn.Module:
    """The registry of kinds: one constructor per kind, from the resolved config alone."""
    hidden = list(cfg.hidden or ())
    builders = {
        "ae": lambda: ae.Autoencoder(n_features, hidden, cfg.latent_dim, cfg.activation, cfg.output_activation),
        "rae": lambda: ae.Autoencoder(n_features, hidden, cfg.latent_dim, cfg.activation, cfg.output_activation),
        "vae": lambda: vae.VAE(n_features, hidden, cfg.latent_dim, cfg.activation, cfg.likelihood, cfg.noise),
        "gan": lambda: gan.GAN(
            n_features, hidden, cfg.latent_dim, cfg.activation, cfg.output_activation, cfg.spectral_norm
        ),
    }
    return builders[cfg.kind]()


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)  # θ ← θ − η∇J (SPEC §2)
    return torch.optim.Adam(params, lr=cfg.lr, foreach=True)  # one fused update per step: ~2x faster on CPU


def cost(model: nn.Module, cfg: TrainConfig, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The kind's training cost on one batch (scalar) and its terms."""
    if cfg.kind == "vae":
        return vae.objective(model, x, cfg.beta, cfg.trim)
    penalty = cfg.penalty if cfg.kind == "rae" else None
    return ae.objective(model, x, cfg.reconstruction, penalty, cfg.lam, cfg.trim)


@dataclass
class Fit:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def fit(cfg: TrainConfig, x_train: np.ndarray, x_val: np.ndarray, progress: bool = True) -> Fit:
    """Train on model-space rows (already preprocessed). Deterministic for a given seed."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    model = build_model(cfg, x_train.shape[1]).to(device)
    xt = torch.from_numpy(x_train).to(device)
    xv = torch.from_numpy(x_val).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order and GAN noise
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.kind} {cfg.name}", disable=not progress, unit="epoch")
    if cfg.kind == "gan":
        return _fit_gan(cfg, model, xt, xv, gen, bar)

    opt = make_optimizer(cfg, model.parameters())
    result = Fit(model)
    best, best_state, waited = float("inf"), _copy_state(model), 0
    for epoch in bar:
        model.train()
        sums: dict[str, float] = {}
        order = torch.randperm(len(xt), generator=gen).to(device)
        n_batches = len(xt) // cfg.batch_size  # drop the ragged last batch: stable step sizes
        for b in range(n_batches):
            xb = xt[order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            loss, terms = cost(model, cfg, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + v.item() / n_batches
        val = _validation_cost(model, cfg, xv)
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in sums.items()}, **val}
        result.history.append(row)
        bar.set_postfix({k.replace("train_", ""): f"{v:.4g}" for k, v in row.items() if k != "epoch"})
        if val["val_loss"] < best - 1e-6 * abs(best) or epoch == 1:
            best, best_state, waited, result.best_epoch = val["val_loss"], _copy_state(model), 0, epoch
        else:
            waited += 1
            if waited >= cfg.patience:
                result.stopped_early = True
                break
    model.load_state_dict(best_state)
    model.eval()
    return result


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def noise_scale(cfg: TrainConfig, model: nn.Module, x_train: np.ndarray) -> np.ndarray | None:
    """σ (F,) of the Gaussian p(x|z) = N(x̂, diag σ²) in model space, where the score needs one:
    the vae's learned σ, or for the ae/rae joint score the RMS residual over all training rows (the
    maximum-likelihood σ of the fitted decoder; over the trimmed rows only, σ comes out smaller, the
    latent term weighs less, and the scores are worse). None where nothing is to be folded."""
    n_features = x_train.shape[1]
    if cfg.kind == "vae" and cfg.noise != "unit":
        return torch.exp(0.5 * model.logvar_x()).expand(n_features).double().numpy()
    if cfg.kind in ("ae", "rae") and cfg.score == "joint":
        xt = torch.from_numpy(x_train)
        return np.full(n_features, math.sqrt(losses.mse(xt, model(xt)).mean().item() / n_features))
    return None


@torch.no_grad()
def fold_noise(
    cfg: TrainConfig, result: Fit, prep: Preprocessing, x_train: np.ndarray, x_val: np.ndarray
) -> tuple[Preprocessing, np.ndarray, np.ndarray]:
    """Fold σ into the scaling, so that the exported graphs work in x' = x / σ, where p(x'|z) has
    unit variance and the scores need no σ: the scale becomes scale·σ, the encoder's first layer
    takes W·diag(σ), the decoder's last layer returns its output / σ. Same model, same z; the
    training-space checkpoint of the weights is not kept. Like the spectral-norm bake, it turns a
    training-time parameter into plain weights. Returns the new scaling and model-space rows."""
    sigma = noise_scale(cfg, result.model, x_train)
    if sigma is None:
        return prep, x_train, x_val
    model = result.model
    s = torch.from_numpy(sigma).float()  # (F,)
    first = model.encoder.net[0]
    last = model.decoder.net[-1]
    first.weight.mul_(s)  # (H, F) · diag(σ)
    last.weight.div_(s[:, None])  # diag(1/σ) · (F, H)
    last.bias.div_(s)
    if cfg.kind == "vae":
        model.set_unit_noise()
    prep = prep.model_copy(update={"scale": [float(a * b) for a, b in zip(prep.scale, sigma)]})
    inv = (1.0 / sigma).astype(np.float32)
    return prep, x_train * inv, x_val * inv


@torch.no_grad()
def _validation_cost(model: nn.Module, cfg: TrainConfig, xv: torch.Tensor) -> dict[str, float]:
    """Validation cost; the vae's uses a fixed-seed draw so that early stopping is reproducible."""
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        loss, terms = cost(model, cfg, xv)
    return {"val_loss": loss.item(), **{f"val_{k}": v.item() for k, v in terms.items()}}


def _fit_gan(cfg: TrainConfig, model: nn.Module, xt, xv, gen: torch.Generator, bar) -> Fit:
    # Adam with β1 = 0.5 is the DCGAN recipe: momentum 0.9 makes the two players oscillate.
    make = (
        (lambda p: torch.optim.Adam(p, lr=cfg.lr, betas=(0.5, 0.999), foreach=True))
        if cfg.optimizer == "adam"
        else (lambda p: torch.optim.SGD(p, lr=cfg.lr))
    )
    opt_d, opt_g = make(model.discriminator.parameters()), make(model.generator.parameters())
    result = Fit(model)
    n_batches = len(xt) // cfg.batch_size
    for epoch in bar:
        model.train()
        sums: dict[str, float] = {}
        order = torch.randperm(len(xt), generator=gen)
        for b in range(n_batches):
            xb = xt[order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            for k, v in gan.step(model, xb, opt_d, opt_g, gen).items():
                sums[k] = sums.get(k, 0.0) + v / n_batches
        with torch.no_grad():
            model.eval()
            logit, prob = model.discriminator(xv)
            val_nlog_d = torch.nn.functional.softplus(-logit).mean().item()
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in sums.items()}, "val_-log D(x)": val_nlog_d}
        result.history.append(row)
        bar.set_postfix({k.replace("train_", ""): f"{v:.3g}" for k, v in row.items() if k != "epoch"})
    result.best_epoch = cfg.epochs
    model.eval()
    return result
