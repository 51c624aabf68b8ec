"""Exported graphs match eager PyTorch, the manifest round-trips, tampering and failed exports are caught."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from artifact.manifest import Manifest
from training import export, pipeline
from training.config import TrainConfig
from training.train import build_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind in ("ae", "rae", "vae", "gan"):
        cfg = TrainConfig(kind=kind, name=f"e-{kind}", models=str(root / "models"), runs=str(root / "runs"), epochs=2)
        out[kind] = pipeline.run(cfg, progress=False)
    x = np.random.default_rng(0).normal(size=(400, 6)) @ np.random.default_rng(1).normal(size=(6, 10))
    np.save(root / "table.npy", x.astype(np.float32))
    for kind in ("ae", "vae"):  # standardised tabular data: the joint and learned-noise scores
        cfg = TrainConfig(
            kind=kind,
            name=f"t-{kind}",
            data=str(root / "table.npy"),
            models=str(root / "models"),
            runs=str(root / "runs"),
            epochs=3,
        )
        out[f"tab-{kind}"] = pipeline.run(cfg, progress=False)
    return out


def _eager(run):
    ckpt = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = build_model(cfg, ckpt["n_features"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt  # parametrised (spectral-norm) weights left in place: eager eval as trained


@pytest.mark.parametrize("kind", ["ae", "rae", "vae", "gan"])
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_export_onnx_matches_eager(runs, kind, batch):
    model, ckpt = _eager(runs[kind])
    manifest = Manifest.read(runs[kind].artifact)
    rng = np.random.default_rng(batch)
    for role, module in model.graphs().items():
        spec = manifest.graph(role, "onnx")
        width = spec.inputs[0].shape[1]
        x = rng.standard_normal((batch, width)).astype(np.float32)
        session = ort.InferenceSession(str(runs[kind].artifact / spec.file), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [spec.inputs[0].name]
        got = session.run([o.name for o in spec.outputs], {spec.inputs[0].name: x})
        with torch.no_grad():
            want = module(torch.from_numpy(x))
        want = want if isinstance(want, tuple) else (want,)
        for g, w, o in zip(got, want, spec.outputs):
            assert g.shape == (batch, o.shape[1])
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4, err_msg=f"{role}.{o.name}")


@pytest.mark.parametrize("kind", ["ae", "vae", "gan"])
def test_export_torchscript_matches_eager(runs, kind):
    model, _ = _eager(runs[kind])
    manifest = Manifest.read(runs[kind].artifact)
    for role, module in model.graphs().items():
        spec = manifest.graph(role, "torchscript")
        scripted = torch.jit.load(str(runs[kind].artifact / spec.file))
        x = torch.randn(7, spec.inputs[0].shape[1])
        with torch.no_grad():
            got, want = scripted(x), module(x)
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        for g, w in zip(got, want):
            assert torch.allclose(g, w, atol=1e-5)


def test_export_manifest_round_trips(runs, tmp_path):
    manifest = Manifest.read(runs["vae"].artifact)
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest


def test_export_manifest_rejects_unknown_fields(runs):
    text = (runs["ae"].artifact / "manifest.json").read_text()
    with pytest.raises(ValueError, match="surprise"):
        Manifest.model_validate_json(text[:-2] + ', "surprise": 1}')


def test_export_manifest_lists_capabilities_and_calibration(runs):
    gan, vae = Manifest.read(runs["gan"].artifact), Manifest.read(runs["vae"].artifact)
    assert gan.capabilities == ["sample", "anomaly-score"]
    assert vae.capabilities == ["encode", "reconstruct", "sample", "anomaly-score"]
    cal = vae.calibration
    assert cal.n_rows == vae.data["calibration_rows"] > 0  # its own split, apart from the validation rows
    assert cal.quantiles == sorted(cal.quantiles)
    assert cal.threshold == pytest.approx(np.quantile(np.array(cal.quantiles), 0.9), rel=0.05)
    assert set(vae.versions) >= {"torch", "onnxruntime", "numpy"}


def test_export_tampered_graph_fails_sha256(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["ae"].artifact, copy)
    manifest = Manifest.read(copy)
    manifest.verify_files(copy)  # intact: passes
    path = copy / manifest.graph("decoder", "onnx").file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="decoder graph file decoder.onnx fails its sha256 check"):
        manifest.verify_files(copy)


def test_export_parity_failure_publishes_nothing(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # every output now "differs"
    ckpt = torch.load(runs["ae"].run_dir / "checkpoint.pt", weights_only=True)
    with pytest.raises(export.ExportError, match="differs from eager PyTorch at batch size 1"):
        export.export_checkpoint(ckpt, tmp_path / "models", "parity")
    assert list((tmp_path / "models" / "parity").iterdir()) == []


def test_parity_bound_is_absolute_near_one_and_relative_for_large_outputs():
    """A float32 sum over many features differs by ~1e-7 of its magnitude with the summation order: a
    code of 300 may differ by 1.2e-4 (ADBench internetads) without the export being wrong."""
    small, large = np.array([[0.5, -1.0]]), np.array([[300.0, -20.0]])
    assert export.parity_bound(small) == pytest.approx(1e-4)
    assert 1.2e-4 > export.parity_bound(small)  # refused at order one
    assert 1.2e-4 <= export.parity_bound(large) == pytest.approx(3e-2)  # accepted at 300
    assert export.parity_bound(np.zeros((0, 3))) == pytest.approx(1e-4)  # an empty output: no crash


def test_export_list_versions_ignores_non_version_folders(tmp_path):
    from artifact.manifest import list_versions

    for name in ("1", "3", "²", "01", "v2", "latest", "٣"):
        (tmp_path / "m" / name).mkdir(parents=True)
        (tmp_path / "m" / name / "manifest.json").write_text("{}")
    assert list_versions(tmp_path, "m") == [1, 3]


@pytest.mark.parametrize("case", ["ae", "rae", "vae", "gan", "tab-ae", "tab-vae"])
def test_export_served_scores_reproduce_the_calibration(runs, case):
    """The service's predictor, given the calibration rows in raw units, gives back the calibrated scores."""
    from artifact.graphs import Backend
    from service.repository import ModelRepository

    run = runs[case]
    manifest = Manifest.read(run.artifact)
    repository = ModelRepository(run.artifact.parent.parent, Backend("onnx", "cpu"))
    repository.load_all()
    ckpt = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)
    x_raw = ckpt["x_cal_raw"].numpy()
    scores = repository.get(manifest.name, manifest.version).anomaly_score(x_raw).scores
    want = np.asarray(manifest.calibration.quantiles)
    got = np.quantile(scores.astype(np.float64), manifest.calibration.levels)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * (1 + np.abs(want).max()))
