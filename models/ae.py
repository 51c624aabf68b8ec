"""Autoencoder (SPEC §1) and regularised autoencoder (SPEC §2): h = g ∘ f.

The two kinds share the network; they differ in cost: the RAE adds λ·Ω(W) on the
weight matrices. Reconstruction by MSE, or by BCE for data scaled to [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from models import losses
from models.networks import Decoder, Encoder, GaussianNoise


class Autoencoder(GaussianNoise):
    def __init__(
        self, n_features: int, hidden: list[int], latent_dim: int, activation: str, output: str, noise: str = "unit"
    ):
        super().__init__()
        # σ of the MSE read as a Gaussian p(x|z): unit (plain MSE), or learned per feature / shared
        self.init_noise(noise, n_features, output == "identity")
        self.encoder = Encoder(n_features, hidden, latent_dim, activation, variational=False)
        self.decoder = Decoder(latent_dim, hidden[::-1], n_features, activation, output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))  # (B, F)

    def graphs(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}


def objective(
    model: Autoencoder, x: torch.Tensor, reconstruction: str, penalty: str | None, lam: float, trim: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """J = mean_B l(x, h(x)) + λ·Ω(W)  (SPEC §2; with λ = 0 or no penalty it is SPEC §1's L).

    Returns the scalar cost and its terms, for logging.
    """
    terms = {"reconstruction": losses.trimmed_mean(reconstruction_cost(model, x, reconstruction), trim)}
    cost = terms["reconstruction"]
    if penalty is not None and lam > 0:
        terms["penalty"] = lam * losses.weight_penalty([model.encoder, model.decoder], penalty)
        cost = cost + terms["penalty"]
    return cost, terms


def reconstruction_cost(model: Autoencoder, x: torch.Tensor, reconstruction: str) -> torch.Tensor:
    """l(x, h(x)) per row (SPEC §1-2): MSE, or BCE from the decoder's logits. (B, F) -> (B,)

    With a learned σ (`noise` feature or shared), the MSE is that of a Gaussian decoder of that σ,
    twice its negative log-likelihood: Σ_f [(x_f − x̂_f)² / σ_f² + log σ_f²] (σ = 1: the plain MSE),
    so that features the decoder rebuilds well weigh more than those it cannot."""
    logits = model.decoder.logits(model.encoder(x))  # (B, F)
    if reconstruction == "mse":
        x_hat = logits if model.decoder.output == "identity" else torch.sigmoid(logits)
        logvar_x = model.logvar_x()
        return losses.mse(x, x_hat) if logvar_x is None else 2.0 * losses.gaussian_nll(x, x_hat, logvar_x)
    if reconstruction == "bce":
        return losses.bce_with_logits(x, logits)
    raise ValueError(f"reconstruction must be 'mse' or 'bce', got {reconstruction!r}")
