"""`latentserve export-triton`, validated without Triton: every config.pbtxt parsed by tritonclient's
model_config_pb2, cross-checked against its ONNX graphs, and each model.onnx run at batch 1, 7 and
max_batch_size; all four kinds, and a name with two versions in one Triton model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from service.cli import main as cli
from training.manifest import Manifest, sha256_file
from training.triton import TensorConfig, TritonExportError, merge

MAX_BATCH = 64
KINDS = {
    "digits-ae": ("encoder", "decoder"),
    "digits-rae": ("encoder", "decoder"),
    "digits-vae": ("encoder", "decoder"),
    "digits-gan": ("generator", "discriminator"),
}
TYPES = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32}


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
    expected = {f"{name}__{role}" for name, roles in KINDS.items() for role in roles}
    assert {p.name for p in triton_repository.iterdir()} == expected


@pytest.mark.parametrize("model", [f"{n}__{r}" for n, roles in KINDS.items() for r in roles])
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
        assert (
            sha256_file(graph)
            == manifest.graph(role, "onnx").sha256
            == config.parameters[f"graph_sha256_v{v}"].string_value
        )
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
            assert out.shape == (batch, *t.dims) and out.dtype == np.float32


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
