"""Losses against hand-computed values, Monte-Carlo estimates and autograd's gradcheck."""

import math

import pytest
import torch
from torch import nn

from models import losses

torch.set_num_threads(1)


def test_gaussian_kl_is_zero_for_the_prior():
    mu, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    assert torch.equal(losses.gaussian_kl(mu, logvar), torch.zeros(3))


def test_gaussian_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.3, -0.7, 0.1]], dtype=torch.float64)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(400_000, 3, dtype=torch.float64)
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    mc = (log_q - log_p).mean()
    assert losses.gaussian_kl(mu, logvar).item() == pytest.approx(mc.item(), abs=0.02)


def test_gaussian_kl_hand_computed():
    # ½ (μ² + σ² − log σ² − 1) with μ = 1, log σ² = 0: ½ (1 + 1 − 0 − 1) = 0.5
    assert losses.gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[0.0]])).item() == pytest.approx(0.5)


def _net():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        net[0].bias.fill_(100.0)  # biases must not count
        net[2].weight.copy_(torch.tensor([[-3.0, 1.0]]))
        net[2].bias.fill_(-50.0)
    return net


def test_weight_penalty_l1_excludes_biases():
    assert losses.weight_penalty([_net()], "l1").item() == pytest.approx(1 + 2 + 0.5 + 0 + 3 + 1)


def test_weight_penalty_l2_excludes_biases():
    assert losses.weight_penalty([_net()], "l2").item() == pytest.approx(1 + 4 + 0.25 + 0 + 9 + 1)


def test_weight_penalty_rejects_unknown_norm():
    with pytest.raises(ValueError, match="l1"):
        losses.weight_penalty([_net()], "l3")


def test_mse_per_sample():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x_hat = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    assert losses.mse(x, x_hat).tolist() == [5.0, 9.0]


def test_bce_per_sample():
    x = torch.tensor([[1.0, 0.0], [0.5, 1.0]])
    p = torch.tensor([[0.8, 0.1], [0.5, 0.9]])
    expected = [-(math.log(0.8) + math.log(0.9)), -(0.5 * math.log(0.5) + 0.5 * math.log(0.5) + math.log(0.9))]
    assert losses.bce(x, p).tolist() == pytest.approx(expected, rel=1e-6)


def test_bce_with_logits_equals_bce_of_sigmoid():
    torch.manual_seed(1)
    x, logits = torch.rand(4, 6), torch.randn(4, 6)
    assert torch.allclose(losses.bce_with_logits(x, logits), losses.bce(x, torch.sigmoid(logits)), atol=1e-5)


def test_negative_elbo_is_reconstruction_plus_beta_kl():
    torch.manual_seed(2)
    x, x_hat = torch.randn(3, 4), torch.randn(3, 4)
    mu, logvar = torch.randn(3, 2), torch.randn(3, 2)
    loss, rec, kl = losses.negative_elbo(x, x_hat, mu, logvar, "gaussian", beta=2.0)
    assert torch.allclose(rec, 0.5 * ((x - x_hat) ** 2).sum(1))
    assert torch.allclose(loss, rec + 2.0 * kl)


def test_gan_losses_hand_computed():
    # D(x) = sigmoid(0) = 0.5 for both: L_D = −log 0.5 − log 0.5, L_G = −log 0.5
    zero = torch.zeros(2, 1)
    assert losses.discriminator_loss(zero, zero).tolist() == pytest.approx([2 * math.log(2)] * 2)
    assert losses.generator_loss(zero).tolist() == pytest.approx([math.log(2)] * 2)


def test_discriminator_loss_matches_probability_form():
    lr, lf = torch.tensor([[2.0]]), torch.tensor([[-1.0]])
    d_real, d_fake = torch.sigmoid(lr), torch.sigmoid(lf)
    expected = -torch.log(d_real) - torch.log(1 - d_fake)
    assert losses.discriminator_loss(lr, lf).item() == pytest.approx(expected.item(), rel=1e-6)


def _double(*shape, low=None):
    t = torch.rand(*shape, dtype=torch.float64) if low == "unit" else torch.randn(*shape, dtype=torch.float64)
    return t.requires_grad_()


@pytest.mark.parametrize(
    "name, fn, make_inputs",
    [
        ("mse", losses.mse, lambda: (_double(3, 4), _double(3, 4))),
        (
            "bce",
            losses.bce,
            lambda: (_double(3, 4, low="unit"), (0.1 + 0.8 * torch.rand(3, 4, dtype=torch.float64)).requires_grad_()),
        ),
        ("bce_with_logits", losses.bce_with_logits, lambda: (_double(3, 4, low="unit"), _double(3, 4))),
        ("gaussian_kl", losses.gaussian_kl, lambda: (_double(3, 2), _double(3, 2))),
        ("gaussian_nll", losses.gaussian_nll, lambda: (_double(3, 4), _double(3, 4))),
        ("discriminator_loss", losses.discriminator_loss, lambda: (_double(3, 1), _double(3, 1))),
        ("generator_loss", losses.generator_loss, lambda: (_double(3, 1),)),
        (
            "negative_elbo",
            lambda x, xh, m, lv: losses.negative_elbo(x, xh, m, lv, "bernoulli")[0],
            lambda: (_double(3, 4, low="unit"), _double(3, 4), _double(3, 2), _double(3, 2)),
        ),
    ],
)
def test_cost_passes_gradcheck(name, fn, make_inputs):
    torch.manual_seed(3)
    assert torch.autograd.gradcheck(fn, make_inputs()), name


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_weight_penalty_passes_gradcheck(norm):
    def penalty(w0, w1):
        layers = [nn.Linear(2, 3).double(), nn.Linear(3, 2).double()]
        for layer, w in zip(layers, (w0, w1)):
            del layer.weight
            layer.weight = w  # a plain tensor, so gradients flow back to the checked inputs
        return losses.weight_penalty([nn.Sequential(*layers)], norm)

    torch.manual_seed(4)
    inputs = (
        torch.randn(3, 2, dtype=torch.float64).requires_grad_(),
        torch.randn(2, 3, dtype=torch.float64).requires_grad_(),
    )
    assert torch.autograd.gradcheck(penalty, inputs)


def test_weight_penalty_gives_biases_no_gradient():
    net = _net()
    losses.weight_penalty([net], "l2").backward()
    assert torch.allclose(net[0].weight.grad, 2 * net[0].weight)
    assert net[0].bias.grad is None and net[2].bias.grad is None
