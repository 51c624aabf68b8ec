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

from artifact.manifest import LatentPrior, Preprocessing
from artifact.scores import ae_joint_score
from models import ae, gan, losses, vae
from training import distributed, objective
from training import rows as rows_mod
from training.config import TrainConfig
from training.distributed import Context
from training.passes import training_stats
from training.progress import Progress


def build_model(cfg: TrainConfig, n_features: int) -> nn.Module:
    """The registry of kinds: one constructor per kind, from the resolved config alone."""
    hidden = list(cfg.hidden or ())
    builders = {
        "ae": lambda: ae.Autoencoder(
            n_features, hidden, cfg.latent_dim, cfg.activation, cfg.output_activation, cfg.noise
        ),
        "rae": lambda: ae.Autoencoder(
            n_features, hidden, cfg.latent_dim, cfg.activation, cfg.output_activation, cfg.noise
        ),
        "vae": lambda: vae.VAE(n_features, hidden, cfg.latent_dim, cfg.activation, cfg.likelihood, cfg.noise),
        "gan": lambda: gan.GAN(
            n_features, hidden, cfg.latent_dim, cfg.activation, cfg.output_activation, cfg.spectral_norm
        ),
    }
    return builders[cfg.kind]()


def pick_device(requested: str) -> torch.device:
    return distributed.pick_device(requested)


def make_optimizer(cfg: TrainConfig, params, decay: list[torch.Tensor] | None = None) -> torch.optim.Optimizer:
    """Adam (or SGD: the notes' θ ← θ − η∇J, SPEC §2). `decay`: the rae's weight matrices under its
    L2 penalty λΣW², whose gradient 2λW the optimizer adds to theirs (weight_decay = 2λ, the same
    update as back-propagating the penalty, without the per-step graph: objective.RowCost)."""
    params = list(params)
    groups: list[dict] = [{"params": params}]
    if decay:
        ids = {id(p) for p in decay}
        groups = [
            {"params": [p for p in params if id(p) not in ids]},
            {"params": list(decay), "weight_decay": 2.0 * cfg.lam},
        ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr, foreach=True)  # one fused update per step: ~2x faster on CPU


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


def fit(
    cfg: TrainConfig,
    x_train: rows_mod.Source,
    x_val: rows_mod.Source,
    progress: bool = True,
    ctx: Context | None = None,
    dtype: torch.dtype = torch.float32,
) -> Fit:
    """Train on model-space rows (already preprocessed). Deterministic for a given seed, and the same
    with N ranks (`ctx`, see training/distributed.py) as with one process; each rank runs this."""
    ctx = ctx or Context(device=pick_device(cfg.device))
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg, x_train.shape[1]).to(device=ctx.device, dtype=dtype)
    xt, xv = rows_mod.Feed(x_train, ctx.device, dtype), rows_mod.Feed(x_val, ctx.device, dtype)
    gen = torch.Generator().manual_seed(cfg.seed)  # batch order and GAN noise, alike on every rank
    n_batches = len(xt) // cfg.batch_size  # drop the ragged last batch: stable step sizes
    bar = Progress(cfg, ctx, n_batches, enabled=progress)
    if cfg.kind == "gan":
        return _fit_gan(cfg, model, xt, xv, gen, bar, ctx, dtype)

    cost = objective.RowCost(model, cfg)
    net = ctx.wrap(cost)  # DDP: gradients averaged over the ranks
    opt = make_optimizer(cfg, model.parameters(), cost.decayed_weights())
    result = Fit(model)
    best, best_state, waited = float("inf"), _copy_state(model), 0
    for epoch in range(1, cfg.epochs + 1):
        cost.train()
        sums = torch.zeros(len(cost.batch_log_names), dtype=torch.float64, device=ctx.device)
        order = torch.randperm(len(xt), generator=gen)  # the same permutation on every rank
        for b in range(n_batches):
            xb = xt.rows(ctx.local(order[b * cfg.batch_size : (b + 1) * cfg.batch_size]))  # (B/N, F)
            eps = None
            if cfg.kind == "vae":  # ε for the global batch from the shared stream, this rank's rows
                eps = ctx.local(torch.randn(cfg.batch_size, cfg.latent_dim, dtype=dtype)).to(ctx.device)
            loss, logs = objective.trimmed_cost(net(xb, eps), cfg.trim, ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += logs / n_batches
            bar.step()
        train = cost.with_decay(dict(zip(cost.batch_log_names, ctx.sum(sums).tolist())))
        val = objective.validation_cost(cost, cfg, xv, ctx)
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in train.items()}, **val}
        result.history.append(row)
        bar.epoch(row)
        if val["val_loss"] < best - 1e-6 * abs(best) or epoch == 1:
            best, best_state, waited, result.best_epoch = val["val_loss"], _copy_state(model), 0, epoch
        else:
            waited += 1
            if waited >= cfg.patience:
                result.stopped_early = True
                break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return result


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def noise_scale(
    cfg: TrainConfig, model: nn.Module, x_train: rows_mod.Source, ctx: Context | None = None
) -> np.ndarray | None:
    """σ (F,) of the Gaussian p(x|z) = N(x̂, diag σ²) in model space, where the score needs one:
    the vae's learned σ; for the ae/rae joint score the RMS residual over all training rows (the
    maximum-likelihood σ of the fitted decoder; over the trimmed rows only, σ comes out smaller, the
    latent term weighs less, and the scores are worse); for the balanced score the σ under which
    both terms have the same median on the training rows (`_balanced_sigma`). None where nothing is
    to be folded.
    Computed on the model's device, in chunks; with N ranks every rank joins and gets the same σ."""
    n_features = x_train.shape[1]
    learned = None
    if cfg.noise != "unit":  # a σ learned with the model (vae; ae/rae with --noise)
        learned = torch.exp(0.5 * model.logvar_x()).expand(n_features).double().cpu().numpy()
    if cfg.kind in ("ae", "rae") and cfg.score == "balanced":
        shape = np.ones(n_features) if learned is None else learned / float(np.exp(np.log(learned).mean()))
        return shape * _balanced_sigma(cfg, model, x_train, shape)
    if learned is not None:
        return learned
    if cfg.kind in ("ae", "rae") and cfg.score == "joint":
        ctx = ctx or Context()
        param = next(model.parameters())

        def residual(x: np.ndarray) -> dict[str, torch.Tensor]:
            xt = torch.from_numpy(x).to(param)  # (C, F) on the model's device
            return {"sse": losses.mse(xt, model(xt)).double().sum().cpu()}

        sse = rows_mod.reduce_chunks(x_train, ctx, residual)["sse"]
        return np.full(n_features, math.sqrt(float(sse) / (len(x_train) * n_features)))
    return None


BALANCE_ROWS = 10000  # training rows (evenly spaced) whose median terms set the balanced score's σ


@torch.no_grad()
def _balanced_sigma(
    cfg: TrainConfig, model: nn.Module, x_train: rows_mod.Source, shape: np.ndarray | None = None
) -> float:
    """σ = √(median ½‖(x − x̂) / shape‖² / median ½ Mahalanobis²(z)) over up to BALANCE_ROWS training
    rows: in x / (σ · shape) the two terms of the served joint score (`scores.ae_joint_score`, under
    the latent Gaussian `passes.training_stats` fits to these rows' codes) have the same median.
    `shape` (F,): the learned σ's per-feature profile (geometric mean 1), or None for one σ. Every
    rank reads the same rows and gets the same σ."""
    n = len(x_train)
    idx = np.unique(np.linspace(0, n - 1, min(n, BALANCE_ROWS)).astype(np.int64))
    x = x_train.take(idx) if isinstance(x_train, rows_mod.MappedRows) else np.asarray(x_train[idx], dtype=np.float32)
    prior = training_stats(cfg, model, x).prior  # one process's pass over these rows alone
    assert prior is not None
    xt = torch.from_numpy(x).to(next(model.parameters()))
    z = model.encoder(xt)
    x_hat = model.decoder(z)
    inv = np.ones(x.shape[1], dtype=np.float32) if shape is None else (1.0 / shape).astype(np.float32)
    scores, terms = ae_joint_score(x * inv, x_hat.cpu().numpy() * inv, z.cpu().numpy(), LatentPrior(**prior))
    reconstruction = terms.sum(axis=1)  # (B,)
    latent = scores - reconstruction  # (B,)
    return math.sqrt(max(float(np.median(reconstruction)), 1e-24) / max(float(np.median(latent)), 1e-12))


@torch.no_grad()
def fold_noise(
    cfg: TrainConfig,
    result: Fit,
    prep: Preprocessing,
    x_train: rows_mod.Source,
    x_val: rows_mod.Source,
    ctx: Context | None = None,
):
    """Fold σ into the scaling, so that the exported graphs work in x' = x / σ, where p(x'|z) has
    unit variance and the scores need no σ: the scale becomes scale·σ, the encoder's first layer
    takes W·diag(σ), the decoder's last layer returns its output / σ. Same model, same z; the
    training-space checkpoint of the weights is not kept. Like the spectral-norm bake, it turns a
    training-time parameter into plain weights. Returns the new scaling and model-space rows.
    The weights are changed on the model's device (CPU or CUDA)."""
    sigma = noise_scale(cfg, result.model, x_train, ctx)
    if sigma is None:
        return prep, x_train, x_val
    model = result.model
    first = model.encoder.net[0]
    last = model.decoder.net[-1]
    s = torch.from_numpy(sigma).to(first.weight)  # (F,) on the model's device and dtype
    first.weight.mul_(s)  # (H, F) · diag(σ)
    last.weight.div_(s[:, None])  # diag(1/σ) · (F, H)
    last.bias.div_(s)
    if cfg.noise != "unit":
        model.set_unit_noise()
    prep = prep.model_copy(update={"scale": [float(a * b) for a, b in zip(prep.scale, sigma)]})
    inv = (1.0 / sigma).astype(np.float32)
    return prep, _scaled(x_train, inv), _scaled(x_val, inv)


def _scaled(x: rows_mod.Source, factor: np.ndarray) -> rows_mod.Source:
    return x.scaled(factor) if isinstance(x, rows_mod.MappedRows) else x * factor


def _fit_gan(cfg: TrainConfig, model: nn.Module, xt, xv, gen: torch.Generator, bar, ctx: Context, dtype) -> Fit:
    # Adam with β1 = 0.5 is the DCGAN recipe: momentum 0.9 makes the two players oscillate.
    make = (
        (lambda p: torch.optim.Adam(p, lr=cfg.lr, betas=(0.5, 0.999), foreach=True))
        if cfg.optimizer == "adam"
        else (lambda p: torch.optim.SGD(p, lr=cfg.lr))
    )
    opt_d, opt_g = make(model.discriminator.parameters()), make(model.generator.parameters())
    players = _Players(ctx.wrap(model.generator), ctx.wrap(model.discriminator), model.latent_dim)  # DDP each
    result = Fit(model)
    n_batches = len(xt) // cfg.batch_size
    names = ["L_D", "L_G", "D(x)", "D(G(z))"]
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        sums = torch.zeros(len(names), dtype=torch.float64)
        order = torch.randperm(len(xt), generator=gen)
        for b in range(n_batches):
            xb = xt.rows(ctx.local(order[b * cfg.batch_size : (b + 1) * cfg.batch_size]))  # (B/N, F)
            z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen, dtype=dtype)  # (B, L): global draw
            logs = gan.step(players, xb, opt_d, opt_g, z=ctx.local(z).to(ctx.device))
            sums += torch.tensor([logs[k] for k in names], dtype=torch.float64) / (n_batches * ctx.world_size)
            bar.step()
        train = dict(zip(names, ctx.sum(sums.to(ctx.device)).tolist()))  # means over all ranks' rows
        row = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in train.items()},
            "val_-log D(x)": _gan_validation(model, xv, ctx),
        }
        result.history.append(row)
        bar.epoch(row)
    bar.close()
    result.best_epoch = cfg.epochs
    model.eval()
    return result


@dataclass
class _Players:
    """What gan.step calls: G and D, each wrapped in DDP when distributed."""

    generator: nn.Module
    discriminator: nn.Module
    latent_dim: int


@torch.no_grad()
def _gan_validation(model: nn.Module, xv, ctx: Context, chunk: int = 16384) -> float:
    """Mean −log D(x) over all validation rows (each rank its shard); the same on every rank."""
    model.eval()
    start, stop = ctx.shard(len(xv))
    parts = [torch.zeros(0, dtype=torch.float64, device=ctx.device)]
    for a in range(start, stop, chunk):
        logit, _ = model.discriminator(xv.take(a, min(stop, a + chunk)))
        parts.append(torch.nn.functional.softplus(-logit).reshape(-1).double())
    return ctx.agree(ctx.gather_rows(torch.cat(parts)).mean().item())
