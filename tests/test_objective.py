"""The pieces of distributed training that need no second process: the trimmed cost's cut, the
rank's share of rows, and the refusal of an uneven global batch before any process group exists."""

from __future__ import annotations

import pytest
import torch

from models import ae
from training import objective
from training.config import ConfigError, TrainConfig
from training.distributed import Context
from training.train import build_model


@pytest.mark.parametrize("trim", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("kind", ["ae", "rae"])
def test_trimmed_cost_with_one_rank_is_the_models_objective(kind, trim):
    cfg = TrainConfig(kind=kind, name="x", lam=1e-3, trim=trim).resolve(16, False, 1000)
    torch.manual_seed(0)
    model = build_model(cfg, 16)
    x = torch.randn(50, 16)
    cost = objective.RowCost(model, cfg)
    loss, logs = objective.trimmed_cost(cost(x), trim, Context())
    expected, terms = ae.objective(
        model, x, "mse", "l2" if kind == "rae" else None, cfg.lam if kind == "rae" else 0.0, trim
    )
    if kind == "rae":  # its L2 penalty is the optimizer's weight decay, not in the back-propagated loss
        assert cost.decoupled
        expected = expected - terms["penalty"]
        assert cost.with_decay({"loss": 1.0})["penalty"] == pytest.approx(terms["penalty"].item(), rel=1e-6)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs[1].item() == pytest.approx(terms["reconstruction"].item(), rel=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_rae_training_steps_are_those_of_its_penalised_objective(penalty, optimizer):
    """The rae's steps with its L2 penalty as weight decay 2λ on the weight matrices (biases
    untouched) equal the steps of back-propagating J = mean l + λΣW² (SPEC §2); L1 is back-propagated."""
    from training.train import make_optimizer

    cfg = TrainConfig(kind="rae", name="x", lam=5e-2, penalty=penalty, optimizer=optimizer, trim=0.1)
    cfg = cfg.resolve(16, False, 1000)
    torch.manual_seed(0)
    ours, reference = build_model(cfg, 16), build_model(cfg, 16)
    reference.load_state_dict(ours.state_dict())
    cost = objective.RowCost(ours, cfg)
    opt = make_optimizer(cfg, ours.parameters(), cost.decayed_weights())
    ref_opt = make_optimizer(cfg, reference.parameters())
    assert cost.decoupled == (penalty == "l2")
    initial = [p.detach().clone() for p in ours.parameters()]
    for step in range(5):
        x = torch.randn(50, 16, generator=torch.Generator().manual_seed(step))
        losses = (
            (opt, objective.trimmed_cost(cost(x), cfg.trim, Context())[0]),
            (ref_opt, ae.objective(reference, x, "mse", penalty, cfg.lam, cfg.trim)[0]),
        )
        for optim, loss in losses:
            optim.zero_grad()
            loss.backward()
            optim.step()
    moved = max((a - b).abs().max().item() for a, b in zip(ours.parameters(), initial))
    assert moved > 1e-3  # the steps did something
    for (name, a), b in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_keep_mask_breaks_ties_by_the_lower_row():
    mask, kept = Context().keep_mask(torch.tensor([1.0, 1.0, 1.0, 0.0]), trim=0.5)
    assert kept == 2
    assert mask.tolist() == [True, False, False, True]


def test_keep_mask_keeps_everything_without_trim():
    mask, kept = Context().keep_mask(torch.tensor([3.0, 1.0, 2.0]), trim=0.0)
    assert kept == 3 and mask.all()


def test_local_takes_the_ranks_contiguous_slice():
    ctx = Context(world_size=4, rank=2)
    assert ctx.local(torch.arange(8)).tolist() == [4, 5]
    assert ctx.local_batch(64) == 16
    assert [Context(world_size=3, rank=r).shard(10) for r in range(3)] == [(0, 3), (3, 7), (7, 10)]


def test_uneven_global_batch_is_refused_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="--batch-size 66 is the global batch .* multiple of 4, such as 64"):
        Context.from_env("cpu", 66)


def test_without_torchrun_there_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = Context.from_env("cpu", 63)
    assert (ctx.world_size, ctx.rank, ctx.is_main, ctx.distributed) == (1, 0, True, False)


def test_bad_world_size_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE must be an integer"):
        Context.from_env("cpu", 64)


def test_a_vae_row_far_outside_the_training_range_leaves_the_gradient_finite():
    """A heavy-tailed table scaled by its IQR can hold a row at 5,000: its posterior variance must
    not overflow (exp(logvar) = inf), or the trimmed cost's zero weight on it turns every gradient
    into NaN (0 · inf) and training diverges (seen on ADBench pageblocks)."""
    cfg = TrainConfig(kind="vae", name="x").resolve(10, False, 1000)
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    x = torch.randn(64, 10)
    x[:4] = 1e5 * torch.randn(4, 10)  # 4 rows (fewer than the 6 trimmed) far outside the training range
    loss, _ = objective.trimmed_cost(objective.RowCost(model, cfg)(x), cfg.trim, Context())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gan_step_runs_one_power_iteration_per_player_update():
    """D's update sees the real and the generated rows through one spectral-normalised weight (one
    power iteration, Miyato et al.'s algorithm 1), and G's update a fresh one after D's step: two
    per layer and step, not three."""
    from torch.nn.utils import parametrize

    from models import gan

    torch.manual_seed(0)
    model = gan.GAN(6, [16, 8], 2, "leaky_relu", "identity", spectral_norm=True)
    layers = [m for m in model.discriminator.modules() if parametrize.is_parametrized(m)]
    assert len(layers) == 3
    calls = [0]
    for layer in layers:
        layer.parametrizations.weight[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=1e-2)
    gan.step(model, torch.randn(32, 6), opt_d, opt_g, z=torch.randn(32, 2))
    assert calls[0] == 2 * len(layers)  # without the shared weight: 3 (real, generated, G's update)
