"""`latentserve export-triton`, validated without Triton: every config.pbtxt parsed by tritonclient's
model_config_pb2, cross-checked against its ONNX graphs, and each model.onnx run at batch 1, 7 and
max_batch_size; all four kinds, and a name with two versions in one Triton model. The fused scoring
graph (`<name>__score`) gives the served anomaly scores to 1e-4, for every score method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from artifact.manifest import Manifest, sha256_file
from latentserve.cli import main as cli
from training.fused import fused_score_graph
from training.triton import TensorConfig, TritonExportError, merge

MAX_BATCH = 64
KINDS = {
    "digits-ae": ("encoder", "decoder"),
    "digits-rae": ("encoder", "decoder"),
    "digits-vae": ("encoder", "decoder"),
    "digits-gan": ("generator", "discriminator"),
}
TYPES = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32, onnx.TensorProto.BOOL: model_config_pb2.TYPE_BOOL}
MODELS = [f"{n}__{r}" for n, roles in KINDS.items() for r in (*roles, "score")]


@pytest.fixture(scope="module")
def triton_repository(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton")
    for name in KINDS:
        argv = [
            "export-triton",
            name,
            "--models",
            str(models_dir),
            "--out",
            str(out),
            "--max-batch-size",
            str(MAX_BATCH),
        ]
        assert cli(argv) == 0
    return out


def read_config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_export_triton_writes_one_model_per_graph(triton_repository):
    assert {p.name for p in triton_repository.iterdir()} == set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_export_triton_config_matches_the_onnx_graph(triton_repository, models_dir, model):
    folder = triton_repository / model
    config = read_config(folder)
    name, role = model.split("__")
    versions = [1, 2] if name == "digits-ae" else [1]
    assert config.name == model and config.backend == "onnxruntime"
    assert config.max_batch_size == MAX_BATCH
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert config.HasField("dynamic_batching")
    assert sorted(int(p.name) for p in folder.iterdir() if p.is_dir()) == versions
    for v in versions:
        source = models_dir / name / str(v)
        manifest = Manifest.read(source)
        assert config.parameters[f"manifest_sha256_v{v}"].string_value == sha256_file(source / "manifest.json")
        graph = folder / str(v) / "model.onnx"
        assert sha256_file(graph) == config.parameters[f"graph_sha256_v{v}"].string_value
        if role != "score":  # the graph itself, unchanged
            assert sha256_file(graph) == manifest.graph(role, "onnx").sha256
        check_against_graph(config, graph)


def check_against_graph(config: model_config_pb2.ModelConfig, graph: Path) -> None:
    """Names, datatypes and dims of the config against the ONNX graph; then runs at 1, 7 and max_batch_size."""
    g = onnx.load(str(graph)).graph
    for declared, tensors in ((config.input, g.input), (config.output, g.output)):
        assert [t.name for t in declared] == [t.name for t in tensors]
        for t, o in zip(declared, tensors):
            assert t.data_type == TYPES[o.type.tensor_type.elem_type]
            dims = o.type.tensor_type.shape.dim
            assert dims[0].dim_param, f"{o.name}: the first axis must be the dynamic batch axis"
            assert len(t.dims) == len(dims) - 1
            for d, od in zip(t.dims, dims[1:]):
                assert d > 0, f"{o.name}: dims {list(t.dims)} should be concrete"
                if od.HasField("dim_value"):
                    assert d == od.dim_value
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for batch in (1, 7, config.max_batch_size):
        feeds = {
            t.name: np.random.default_rng(batch).standard_normal((batch, *t.dims)).astype(np.float32)
            for t in config.input
        }
        outs = session.run([t.name for t in config.output], feeds)
        for t, out in zip(config.output, outs):
            dtype = np.bool_ if t.data_type == model_config_pb2.TYPE_BOOL else np.float32
            assert out.shape == (batch, *t.dims) and out.dtype == dtype


def test_export_triton_replaces_a_previous_export(triton_repository, models_dir):
    stale = triton_repository / "digits-gan__generator" / "9"
    stale.mkdir()
    assert (
        cli(
            [
                "export-triton",
                "digits-gan",
                "--models",
                str(models_dir),
                "--out",
                str(triton_repository),
                "--max-batch-size",
                str(MAX_BATCH),
            ]
        )
        == 0
    )
    assert not stale.exists() and (triton_repository / "digits-gan__generator" / "1" / "model.onnx").is_file()


def test_export_triton_refuses_a_tampered_graph(copy_model, tamper, tmp_path, capsys):
    folder = copy_model("digits-ae", tmp_path / "models")
    tamper(folder / "encoder.onnx")
    assert (
        cli(["export-triton", "digits-ae", "--models", str(tmp_path / "models"), "--out", str(tmp_path / "out")]) == 2
    )
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "out" / "digits-ae__encoder").exists()


def test_export_triton_unknown_model_is_a_clear_error(models_dir, tmp_path, capsys):
    assert cli(["export-triton", "nope", "--models", str(models_dir), "--out", str(tmp_path)]) == 2
    assert "no model folder" in capsys.readouterr().err


def test_export_triton_merge_differing_dims_become_minus_one():
    a = [TensorConfig("x", "TYPE_FP32", (64,))]
    b = [TensorConfig("x", "TYPE_FP32", (32,))]
    assert merge("m", {1: a, 2: a}, "inputs") == a
    assert merge("m", {1: a, 2: b}, "inputs") == [TensorConfig("x", "TYPE_FP32", (-1,))]


def test_export_triton_merge_differing_names_is_a_clear_error():
    a = [TensorConfig("x", "TYPE_FP32", (64,))]
    with pytest.raises(TritonExportError, match="version 2's inputs .*input0.* differ from version 1's"):
        merge("m", {1: a, 2: [TensorConfig("input0", "TYPE_FP32", (64,))]}, "inputs")


@pytest.mark.parametrize("name", list(KINDS))
def test_export_triton_fused_score_equals_the_served_scores(triton_repository, onnx_repository, digits, name):
    x = digits[:500]  # raw units, as /anomaly-score takes them
    session = ort.InferenceSession(str(triton_repository / f"{name}__score" / "1" / "model.onnx"))
    score, is_anomaly = session.run(["score", "is_anomaly"], {"x": x})
    want = onnx_repository.get(name, 1).anomaly_score(x)
    assert score.shape == is_anomaly.shape == (500, 1)
    np.testing.assert_allclose(score[:, 0], want.scores, rtol=1e-4, atol=1e-4)
    near = np.abs(want.scores - want.threshold) <= 1e-4 * np.abs(want.threshold)  # float32 vs float64 at the line
    np.testing.assert_array_equal(is_anomaly[~near, 0], want.is_anomaly[~near])
    assert is_anomaly.any() and not is_anomaly.all(), "500 digits rows should hold some of each"


def test_export_triton_no_fused_leaves_the_score_graph_out(models_dir, tmp_path):
    argv = ["export-triton", "digits-gan", "--models", str(models_dir), "--out", str(tmp_path), "--no-fused"]
    assert cli(argv) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"digits-gan__generator", "digits-gan__discriminator"}


METHODS = [
    ("digits-ae", "reconstruction-mse"),
    ("digits-ae", "reconstruction-bce"),
    ("digits-ae", "ae-joint-gaussian"),
    ("digits-vae", "negative-elbo-gaussian-posterior-mean"),
    ("digits-vae", "negative-elbo-bernoulli-posterior-mean"),
    ("digits-vae", "negative-elbo-gaussian-posterior-draws"),
    ("digits-vae", "negative-elbo-bernoulli-posterior-draws"),
    ("digits-gan", "neg-log-discriminator"),
    ("digits-gan", "gan-latent-search"),
]


@pytest.mark.parametrize(("name", "method"), METHODS, ids=[m for _, m in METHODS])
def test_fused_score_graph_every_score_method(copy_model, load_repository, digits, tmp_path, name, method):
    """The same graphs scored by each method the manifest can name: the fused graph follows the manifest."""
    folder = copy_model(name, tmp_path)
    manifest = Manifest.read(folder)
    manifest.model_copy(update={"calibration": manifest.calibration.model_copy(update={"method": method})}).write(
        folder
    )
    x = digits[:200].copy()
    x[::10, 20] = 1000.0  # out of the training range (0-16): the out-of-range term, in both
    x[5::10, 3] = -40.0
    session = ort.InferenceSession(fused_score_graph(folder).SerializeToString())
    (score,) = session.run(["score"], {"x": x})
    want = load_repository(tmp_path).get(name).anomaly_score(x).scores
    np.testing.assert_allclose(score[:, 0], want, rtol=1e-4, atol=1e-4)


def test_fused_score_graph_unknown_method_is_a_clear_error(copy_model, tmp_path):
    folder = copy_model("digits-ae", tmp_path)
    manifest = Manifest.read(folder)
    manifest.model_copy(update={"calibration": manifest.calibration.model_copy(update={"method": "magic"})}).write(
        folder
    )
    # model_copy skips validation; reading it back refuses the manifest, naming the method
    with pytest.raises(ValueError, match="unknown score method 'magic'"):
        fused_score_graph(folder)
