"""Training on real data (digits) beats simple baselines, is deterministic, and refuses bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch

from artifact.manifest import Manifest
from training import pipeline
from training.config import TrainConfig

torch.set_num_threads(1)
EPOCHS = {"ae": 40, "rae": 40, "vae": 80, "gan": 40}
# A larger step lets the vae reach its default-run quality within the test's few epochs.
FAST = {"vae": {"lr": 3e-3}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each kind trained once on digits (a few seconds each), exported into one repository."""
    root = tmp_path_factory.mktemp("trained")
    results = {}
    for kind, epochs in EPOCHS.items():
        cfg = TrainConfig(
            kind=kind,
            name=f"digits-{kind}",
            models=str(root / "models"),
            runs=str(root / "runs"),
            epochs=epochs,
            **FAST.get(kind, {}),
        )
        results[kind] = pipeline.run(cfg, progress=False)
    return results


@pytest.mark.parametrize("kind", ["ae", "rae", "vae"])
def test_training_beats_mean_predictor(trained, kind):
    m = trained[kind].metrics
    assert m["val_reconstruction_mse"] < 0.5 * m["mean_predictor_mse"], m


def test_training_gan_samples_nearer_data_than_uniform_noise(trained):
    m = trained["gan"].metrics
    assert m["sample_nn_distance"] < m["uniform_noise_nn_distance"], m


@pytest.mark.parametrize("kind", ["ae", "rae", "vae", "gan"])
def test_training_writes_run_folder(trained, kind):
    run_dir = trained[kind].run_dir
    for name in ("metrics.json", "checkpoint.pt", "loss_curves.png", "samples.png"):
        assert (run_dir / name).is_file(), name
    if kind != "gan":
        assert (run_dir / "reconstructions.png").is_file()


@pytest.mark.parametrize("kind", ["ae", "rae", "vae", "gan"])
def test_training_manifest_describes_artifact(trained, kind):
    artifact = trained[kind].artifact
    manifest = Manifest.read(artifact)
    assert (manifest.name, manifest.version, manifest.kind) == (f"digits-{kind}", 1, kind)
    assert manifest.n_features == 64 and manifest.image_shape == [8, 8]
    assert manifest.training["kind"] == kind and manifest.training["epochs"] == EPOCHS[kind]
    assert manifest.metrics == trained[kind].metrics
    roles = {"gan": {"generator", "discriminator"}}.get(kind, {"encoder", "decoder"})
    assert set(manifest.graphs) == roles
    manifest.verify_files(artifact)
    assert (manifest.latent_prior is not None) == (kind in ("ae", "rae"))


def test_training_rae_logs_penalty_term(trained):
    history_keys = set(trained["rae"].metrics)
    assert {"train_reconstruction", "train_penalty"} <= history_keys


def test_training_vae_logs_kl_term(trained):
    assert {"train_reconstruction", "train_kl"} <= set(trained["vae"].metrics)


def test_training_gan_logs_adversarial_terms(trained):
    assert {"train_L_D", "train_L_G", "train_D(x)", "train_D(G(z))"} <= set(trained["gan"].metrics)


@pytest.mark.parametrize("kind", ["rae", "gan"])
def test_training_same_seed_gives_identical_weights(tmp_path, kind):
    runs = []
    for i in range(2):
        cfg = TrainConfig(
            kind=kind, name="det", models=str(tmp_path / f"m{i}"), runs=str(tmp_path / f"r{i}"), epochs=3, seed=7
        )
        runs.append(pipeline.run(cfg, progress=False))
    a, b = (torch.load(r.run_dir / "checkpoint.pt", weights_only=True) for r in runs)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    ma, mb = (Manifest.read(r.artifact) for r in runs)
    assert ma.metrics == mb.metrics
    assert ma.calibration == mb.calibration


def test_training_other_seed_gives_other_weights(tmp_path):
    ckpts = []
    for seed in (1, 2):
        cfg = TrainConfig(
            kind="ae", name="s", models=str(tmp_path / "m"), runs=str(tmp_path / f"r{seed}"), epochs=2, seed=seed
        )
        ckpts.append(torch.load(pipeline.run(cfg, progress=False).run_dir / "checkpoint.pt", weights_only=True))
    key = next(iter(ckpts[0]["state_dict"]))
    assert not torch.equal(ckpts[0]["state_dict"][key], ckpts[1]["state_dict"][key])


def test_training_tabular_csv_standardises_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 3))
    x = z @ rng.normal(size=(3, 12)) * np.arange(1, 13) + 1000.0  # low-rank, wildly different scales
    path = tmp_path / "table.csv"
    header = ",".join(f"f{i}" for i in range(12))
    np.savetxt(path, x, delimiter=",", header=header, comments="")
    cfg = TrainConfig(
        kind="ae", name="tab", data=str(path), models=str(tmp_path / "m"), runs=str(tmp_path / "r"), epochs=60
    )
    result = pipeline.run(cfg, progress=False)
    manifest = Manifest.read(result.artifact)
    assert manifest.feature_names == header.split(",")
    assert manifest.preprocessing.method == "standardize"
    assert manifest.preprocessing.offset[0] == pytest.approx(x[:, 0].mean(), rel=0.05)
    assert result.metrics["val_reconstruction_mse"] < 0.5 * result.metrics["mean_predictor_mse"]


def test_training_next_version_never_overwrites(tmp_path):
    cfg = TrainConfig(kind="ae", name="v", models=str(tmp_path / "m"), runs=str(tmp_path / "r"), epochs=1)
    first = pipeline.run(cfg, progress=False).artifact
    before = (first / "manifest.json").read_bytes()
    second = pipeline.run(cfg, progress=False).artifact
    assert (first.name, second.name) == ("1", "2")
    assert (first / "manifest.json").read_bytes() == before
    assert not [p for p in Path(tmp_path / "m" / "v").iterdir() if p.name.startswith(".")]
