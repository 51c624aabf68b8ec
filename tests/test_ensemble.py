"""Ensembles (`latentserve train --ensemble N`): N members of one kind in one artifact, one score.

The served score of a row is the mean over the members of (member score − its calibration mean)
/ its calibration std; here it is recomputed by hand from each member loaded as a model of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from artifact.errors import ArtifactError
from artifact.graphs import Backend
from artifact.manifest import Manifest
from artifact.predictor import Predictor
from service.app import create_app
from service.settings import Settings
from tests.test_planted_outliers import planted
from training import data as data_mod
from training.config import ConfigError, TrainConfig
from training.pipeline import run

MEMBERS = 3


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("ensemble")
    x, _ = planted(600, seed=1)
    data = root / "table.npy"
    np.save(data, x)
    cfg = TrainConfig(
        kind="ae", name="table-ae", data=str(data), models=str(root / "models"), runs=str(root / "runs"), epochs=20
    )
    result = run(TrainConfig(**{**cfg.__dict__, "ensemble": MEMBERS}), progress=False)
    assert result is not None
    return result.artifact, x


def test_ensemble_artifact_holds_every_members_graphs(ensemble):
    folder, _ = ensemble
    m = Manifest.read(folder)
    assert m.ensemble is not None and len(m.ensemble.members) == MEMBERS
    assert [member.seed for member in m.ensemble.members] == [0, 1000, 2000]
    files = {spec.file for _, by_format in m.all_graphs() for spec in by_format.values()}
    assert files == {f"{p}{role}.{ext}" for p in ("", "member1-", "member2-") for role in ("encoder", "decoder")
                     for ext in ("onnx", "pt")}  # fmt: skip
    assert all((folder / f).is_file() for f in files)
    # The members differ (seeds), so averaging them is not a no-op.
    first, second = m.member(0), m.member(1)
    assert first.graphs["encoder"]["onnx"].sha256 != second.graphs["encoder"]["onnx"].sha256


def test_ensemble_served_score_is_the_mean_of_normalised_member_scores(ensemble):
    folder, x = ensemble
    predictor = Predictor.open(folder)
    m = predictor.manifest
    assert m is not None and m.ensemble is not None
    rows = planted(200, seed=5)[0]
    by_hand = np.zeros(len(rows))
    for i, spec in enumerate(m.ensemble.members):
        member = Predictor(folder, Backend("onnx", "cpu", 1), manifest=m.member(i))
        member.load()
        assert member.state == "ready", member.reason
        raw = member.scores(rows)[0]
        by_hand += (raw - spec.score_mean) / spec.score_std
    by_hand /= MEMBERS
    served = predictor.anomaly_score(rows)
    np.testing.assert_allclose(served.scores, by_hand, rtol=1e-6, atol=1e-6)
    assert np.array_equal(served.is_anomaly, by_hand > m.calibration.threshold)


def test_ensemble_normalisation_and_threshold_come_from_the_calibration_rows(ensemble):
    folder, x = ensemble
    predictor = Predictor.open(folder)
    m = predictor.manifest
    assert m is not None and m.ensemble is not None
    cal_idx = data_mod.split_calibration_index(len(x), 0.15, 0)[1]
    x_cal = x[cal_idx]
    assert m.calibration.n_rows == len(x_cal)
    for i, spec in enumerate(m.ensemble.members):
        member = Predictor(folder, Backend("onnx", "cpu", 1), manifest=m.member(i))
        member.load()
        raw = member.scores(x_cal)[0]
        assert spec.score_mean == pytest.approx(raw.mean(), rel=1e-5)
        assert spec.score_std == pytest.approx(raw.std(), rel=1e-5)
    scores = predictor.scores(x_cal)[0]
    assert scores.mean() == pytest.approx(0.0, abs=1e-5)  # a mean of z-scores on their own rows
    assert m.calibration.threshold == pytest.approx(np.quantile(scores, 1 - m.calibration.contamination), rel=1e-5)


def test_ensemble_ranks_planted_outliers(ensemble):
    folder, _ = ensemble
    x_test, y_test = planted(400, seed=2)
    assert roc_auc_score(y_test, Predictor.open(folder).scores(x_test)[0]) > 0.9


def test_ensemble_served_over_http_with_its_member_count(ensemble, load_repository):
    folder, _ = ensemble
    repo = folder.parent.parent
    rows = planted(20, seed=7)[0]
    with TestClient(create_app(Settings(models=repo), repository=load_repository(repo))) as client:
        r = client.post("/anomaly-score", json={"model": "table-ae", "inputs": rows.tolist(), "explain": True})
        info = client.get("/models/table-ae").json()
    assert r.status_code == 200, r.text
    expected = Predictor.open(folder).anomaly_score(rows, explain=True)
    np.testing.assert_allclose(r.json()["scores"], expected.scores, rtol=1e-5, atol=1e-5)
    assert len(r.json()["contributions"][0]) == rows.shape[1]
    assert info["versions"][0]["anomaly_score"]["ensemble_members"] == MEMBERS


def test_ensemble_with_a_tampered_member_is_refused_naming_it(ensemble, tmp_path, tamper):
    folder, _ = ensemble
    copy = tmp_path / "table-ae" / "1"
    shutil.copytree(folder, copy)
    tamper(copy / "member2-decoder.onnx")
    with pytest.raises(ArtifactError, match="member2-decoder.onnx fails its sha256 check"):
        Predictor.open(copy)


def test_ensemble_manifest_whose_first_member_is_not_the_model_is_refused(ensemble):
    folder, _ = ensemble
    data = json.loads((folder / "manifest.json").read_text())
    members = data["ensemble"]["members"]
    members[0], members[1] = members[1], members[0]
    with pytest.raises(ValueError, match="first member must have the manifest's graphs"):
        Manifest.model_validate(data)
    data = json.loads((folder / "manifest.json").read_text())
    data["ensemble"]["members"][1]["graphs"]["encoder"]["onnx"]["file"] = "encoder.onnx"
    with pytest.raises(ValueError, match="member 1 reuses the graph file encoder.onnx"):
        Manifest.model_validate(data)
    data = json.loads((folder / "manifest.json").read_text())
    data["ensemble"]["members"][2]["preprocessing"].update(offset=[0.0], scale=[1.0])
    with pytest.raises(ValueError, match="ensemble member 2: preprocessing has 1 offsets for 8 features"):
        Manifest.model_validate(data)


@pytest.mark.parametrize("members", [0, 33])
def test_ensemble_size_out_of_range_says_so(members):
    with pytest.raises(ConfigError, match="--ensemble must be between 1 and 32 members"):
        TrainConfig(kind="ae", name="x", ensemble=members).check()


def test_ensemble_export_triton_is_refused_saying_why(ensemble, tmp_path):
    from training.triton import TritonExportError, export_triton

    folder, _ = ensemble
    with pytest.raises(TritonExportError, match=r"is an ensemble of 3 members: .* \(--ensemble 1; "):
        export_triton(folder.parent, tmp_path / "triton")
    assert not (tmp_path / "triton").exists()


@pytest.mark.parametrize(
    ("kind", "is_image", "world", "expected"),
    [
        ("ae", False, 1, 3),
        ("rae", False, 1, 3),
        ("gan", False, 1, 3),
        ("vae", False, 1, 1),  # 3 vae fits would pass the 30 s bound on 10,000 x 100
        ("gan", True, 1, 1),  # never on images
        ("ae", False, 2, 1),  # nor under torchrun
    ],
)
def test_default_ensemble_size_per_kind(kind, is_image, world, expected):
    cfg = TrainConfig(kind=kind, name="x").resolve(n_features=64 if is_image else 8, is_image=is_image, world=world)
    assert cfg.ensemble == expected
    assert TrainConfig(kind=kind, name="x", ensemble=2).resolve(8, False).ensemble == 2  # the flag wins
