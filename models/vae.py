"""Variational autoencoder (SPEC §3): q(z|x) = N(mu, diag(exp(logvar))), z = mu + sigma ⊙ eps."""

from __future__ import annotations

import torch
from torch import nn

from models import losses
from models.networks import Decoder, Encoder


class VAE(nn.Module):
    def __init__(self, n_features: int, hidden: list[int], latent_dim: int, activation: str, likelihood: str):
        super().__init__()
        output = "sigmoid" if likelihood == "bernoulli" else "identity"
        self.likelihood = likelihood
        self.encoder = Encoder(n_features, hidden, latent_dim, activation, variational=True)
        self.decoder = Decoder(latent_dim, hidden[::-1], n_features, activation, output)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)  # (B, L), (B, L)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps  # z = mu + sigma ⊙ eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar))

    def graphs(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}


def objective(model: VAE, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batch mean of the negative ELBO (SPEC §3), one reparameterised draw per row."""
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar)
    decoded = model.decoder.logits(z) if model.likelihood == "bernoulli" else model.decoder(z)
    loss, rec, kl = losses.negative_elbo(x, decoded, mu, logvar, model.likelihood, beta)
    return loss.mean(), {"reconstruction": rec.mean(), "kl": kl.mean()}
