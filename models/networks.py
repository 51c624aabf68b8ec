"""MLP building blocks: the encoder f, decoder g, generator G and discriminator D of SPEC §1-4.

Each `forward` is exactly what gets exported (no losses inside). Shapes: B rows,
F features, L latent dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive sizes, the activation after every layer but the last."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


# σ² of a Gaussian p(x|z) never falls below 1e-2 (σ ≥ 0.1 model-space units, a tenth of a standard
# deviation on standardised data): a feature the decoder predicts exactly cannot drive the likelihood to ∞.
LOGVAR_X_FLOOR = math.log(1e-2)


class GaussianNoise(nn.Module):
    """The σ of a Gaussian decoder p(x|z) = N(x̂, diag σ²): unit (no parameter), or learned per
    feature or shared, as log σ² above LOGVAR_X_FLOOR. The vae's and the ae/rae's alike; kept as
    the `raw_logvar_x` parameter of the model that mixes it in."""

    raw_logvar_x: nn.Parameter | None

    def init_noise(self, noise: str, n_features: int, gaussian: bool) -> None:
        width = {"feature": n_features, "shared": 1}.get(noise)
        self.raw_logvar_x = nn.Parameter(torch.zeros(width)) if width and gaussian else None

    def logvar_x(self) -> torch.Tensor | None:
        """log σ² of p(x|z) (F,) or (1,), floored smoothly at LOGVAR_X_FLOOR; 0 (σ = 1) at start."""
        if self.raw_logvar_x is None:
            return None
        return LOGVAR_X_FLOOR + torch.nn.functional.softplus(self.raw_logvar_x - LOGVAR_X_FLOOR)

    @torch.no_grad()
    def set_unit_noise(self) -> None:
        """σ = 1 (log σ² = 0), once σ is folded into the data's scale (training.train.fold_noise)."""
        if self.raw_logvar_x is not None:
            floor = LOGVAR_X_FLOOR
            self.raw_logvar_x.fill_(floor + math.log(math.expm1(-floor)))  # softplus⁻¹(−floor)


LOGVAR_LIMIT = 30.0  # posterior log σ² bounds: σ² in [1e-13, 1e13], far beyond any fitted value


class Encoder(nn.Module):
    """f: x -> z (deterministic, SPEC §1), or x -> (mu, logvar) when variational (SPEC §3)."""

    def __init__(self, n_features: int, hidden: list[int], latent_dim: int, activation: str, variational: bool):
        super().__init__()
        self.variational = variational
        out = 2 * latent_dim if variational else latent_dim
        self.net = mlp([n_features, *hidden, out], activation)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor):
        h = self.net(x)  # (B, L) or (B, 2L)
        if self.variational:
            mu, logvar = h.chunk(2, dim=1)  # (B, L) each
            # log σ² within ±LOGVAR_LIMIT: exp(logvar) stays finite for a row far outside the training
            # range (a heavy-tailed table scaled by its IQR can put one at 5,000), whose inf would turn
            # the whole batch's gradient to NaN even when the trimmed cost leaves that row out
            return mu, logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)
        return h


class Decoder(nn.Module):
    """g: z -> x̂. `logits` is the pre-activation output; `forward` applies the output activation
    (sigmoid for data in [0, 1], identity otherwise), which is what the service sees."""

    def __init__(self, latent_dim: int, hidden: list[int], n_features: int, activation: str, output: str):
        super().__init__()
        if output not in ("identity", "sigmoid"):
            raise ValueError(f"output activation must be 'identity' or 'sigmoid', got {output!r}")
        self.output = output
        self.net = mlp([latent_dim, *hidden, n_features], activation)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, F)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.net(z)
        return torch.sigmoid(h) if self.output == "sigmoid" else h


Generator = Decoder  # G: z -> x̂ has the decoder's shape (SPEC §4); the name documents the role.


class Discriminator(nn.Module):
    """D: x -> (logit, probability that x is real) (SPEC §4). Training uses the logit for stability.

    Spectral normalisation (Miyato et al. 2018) bounds D's Lipschitz constant: the cost is the
    SPEC's unchanged, but on digits it turns seed-dependent mode collapse (one to three digit
    classes) into samples of all ten classes, for every seed tried.
    """

    def __init__(self, n_features: int, hidden: list[int], activation: str, spectral: bool = True):
        super().__init__()
        self.net = mlp([n_features, *hidden, 1], activation)
        if spectral:
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Linear):
                    self.net[i] = spectral_norm(layer)

    def forward(self, x: torch.Tensor):
        logit = self.net(x)  # (B, 1)
        return logit, torch.sigmoid(logit)


def bake_parametrizations(model: nn.Module) -> nn.Module:
    """Replace parametrised weights (spectral norm) by their current values, in eval mode.

    The exported graph then holds plain matrices: the same outputs as eager eval, no power
    iteration, and no operators the ONNX exporter lacks.
    """
    from torch.nn.utils import parametrize

    model.eval()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):  # type: ignore[union-attr,operator]
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model
