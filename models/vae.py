"""Variational autoencoder (SPEC §3): q(z|x) = N(mu, diag(exp(logvar))), z = mu + sigma ⊙ eps."""

from __future__ import annotations

import math

import torch
from torch import nn

from models import losses
from models.networks import Decoder, Encoder, GaussianNoise


class VAE(GaussianNoise):
    def __init__(
        self,
        n_features: int,
        hidden: list[int],
        latent_dim: int,
        activation: str,
        likelihood: str,
        noise: str = "unit",
    ):
        super().__init__()
        output = "sigmoid" if likelihood == "bernoulli" else "identity"
        self.likelihood = likelihood
        self.noise = noise
        # Gaussian decoder variance: unit, or learned per feature / shared (log σ², above a floor).
        self.init_noise(noise, n_features, likelihood == "gaussian")
        self.encoder = Encoder(n_features, hidden, latent_dim, activation, variational=True)
        self.decoder = Decoder(latent_dim, hidden[::-1], n_features, activation, output)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)  # (B, L), (B, L)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        eps = torch.randn_like(mu) if eps is None else eps  # (B, L); given: drawn by the caller
        return mu + torch.exp(0.5 * logvar) * eps  # z = mu + sigma ⊙ eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar))

    def graphs(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}


def objective(
    model: VAE, x: torch.Tensor, beta: float, trim: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batch mean of the negative ELBO (SPEC §3), one reparameterised draw per row; with `trim`,
    the mean leaves out that share of the rows with the highest cost (see losses.trimmed_mean)."""
    loss, rec, kl = row_costs(model, x, beta)
    if trim > 0:
        kept = torch.topk(loss, max(1, math.ceil((1.0 - trim) * len(loss))), largest=False).indices
        loss, rec, kl = loss[kept], rec[kept], kl[kept]
    return loss.mean(), {"reconstruction": rec.mean(), "kl": kl.mean()}


def row_costs(
    model: VAE, x: torch.Tensor, beta: float, eps: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row negative ELBO, reconstruction and KL (SPEC §3), one draw z = mu + sigma ⊙ eps per row,
    eps (B, L) given by the caller or drawn here. Each (B,)."""
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, eps)
    decoded = model.decoder.logits(z) if model.likelihood == "bernoulli" else model.decoder(z)
    return losses.negative_elbo(x, decoded, mu, logvar, model.likelihood, beta, model.logvar_x())
