"""`latentserve export-triton`: a Triton Inference Server model repository of a model's raw graphs.

Every graph role of the model is one Triton model, `<name>__<role>` (e.g. `digits-vae__encoder`),
holding `config.pbtxt` and `<version>/model.onnx` for every version of the name. The config says
`backend: "onnxruntime"`, `max_batch_size` (our batching limit), each tensor's datatype and dims as
the ONNX graph declares them past the batch axis (a symbolic dim is resolved by running the graph;
versions that differ in a dim get -1 there), `version_policy { all {} }`, dynamic batching, and
the sha256 of each version's manifest.json and graph in `parameters`. `<name>__score` is the fused
scoring graph (raw-unit `x` in, `score` and `is_anomaly` out: training/fused.py).

Triton then serves the graphs as they are, in the model's preprocessed units, and the fused score
graph; percentiles, contributions and raw-unit encode/reconstruct/sample only latentserve serves
(docs/oip.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from artifact.manifest import KIND_GRAPHS, MANIFEST_FILE, Manifest, list_versions, sha256_file
from training.fused import FUSED_ROLE, FusedGraphError, write_fused

DEFAULT_MAX_BATCH_SIZE = 1024  # LATENTSERVE_MAX_BATCH_ROWS's default: rows per batched runtime call
# ONNX TensorProto element types -> Triton's config data types
ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
}


class TritonExportError(RuntimeError):
    """The graphs cannot be written as one faithful Triton model; nothing was written."""


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]  # past the batch axis; -1 where versions differ


def graph_tensors(path: Path) -> tuple[list[TensorConfig], list[TensorConfig]]:
    """(inputs, outputs) of an ONNX graph with a leading batch axis; symbolic dims resolved by a run."""
    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    inputs = [t for t in model.graph.input if t.name not in initializers]
    declared: dict[str, tuple[str, list[int | str]]] = {}
    for t in [*inputs, *model.graph.output]:
        kind = t.type.tensor_type.elem_type
        if kind not in ONNX_TO_TRITON:
            raise TritonExportError(
                f"{path.name}: tensor {t.name!r} has ONNX type {kind}, which this export cannot map"
            )
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.type.tensor_type.shape.dim]
        if not dims or isinstance(dims[0], int):
            raise TritonExportError(
                f"{path.name}: tensor {t.name!r} has shape {dims}; a batched Triton model needs a dynamic first axis"
            )
        declared[t.name] = (ONNX_TO_TRITON[kind], dims[1:])
    resolved = (
        _run_shapes(path, inputs) if any(isinstance(d, str) for _, dims in declared.values() for d in dims) else {}
    )

    def config(name: str) -> TensorConfig:
        data_type, dims = declared[name]
        return TensorConfig(
            name,
            data_type,
            tuple(d if isinstance(d, int) else resolved.get(name, {}).get(i, -1) for i, d in enumerate(dims)),
        )

    return [config(t.name) for t in inputs], [config(t.name) for t in model.graph.output]


def _run_shapes(path: Path, inputs: list) -> dict[str, dict[int, int]]:
    """Concrete sizes of symbolic non-batch dims, from runs at batch 1 and 2 (-1 where they differ)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    widths = {t.name: [d.dim_value for d in t.type.tensor_type.shape.dim][1:] for t in inputs}
    if any(w <= 0 for ws in widths.values() for w in ws):
        return {}  # symbolic input widths: nothing to run with; those dims stay -1
    runs = []
    for batch in (1, 2):
        feeds = {n: np.zeros((batch, *ws), np.float32) for n, ws in widths.items()}
        outs = session.run(None, feeds)
        runs.append({o.name: out.shape[1:] for o, out in zip(session.get_outputs(), outs)})
    return {n: {i: (d if d == runs[1][n][i] else -1) for i, d in enumerate(shape)} for n, shape in runs[0].items()}


def merge(name: str, per_version: dict[int, list[TensorConfig]], what: str) -> list[TensorConfig]:
    """One tensor list for every version: same names and types, or TritonExportError; dims that differ -> -1."""
    versions = sorted(per_version)
    first = per_version[versions[0]]
    for v in versions[1:]:
        other = per_version[v]
        if [(t.name, t.data_type, len(t.dims)) for t in other] != [(t.name, t.data_type, len(t.dims)) for t in first]:
            raise TritonExportError(
                f"{name}: version {v}'s {what} {_listed(other)} differ from version {versions[0]}'s {_listed(first)} "
                f"in names, datatypes or ranks, which one Triton model cannot serve; export them under different names"
            )
    return [
        TensorConfig(
            t.name,
            t.data_type,
            tuple(d if all(per_version[v][i].dims[j] == d for v in versions) else -1 for j, d in enumerate(t.dims)),
        )
        for i, t in enumerate(first)
    ]


def _listed(tensors: list[TensorConfig]) -> str:
    return "[" + ", ".join(f"{t.name} {t.data_type} {list(t.dims)}" for t in tensors) + "]"


def config_text(
    name: str, max_batch_size: int, inputs: list[TensorConfig], outputs: list[TensorConfig], parameters: dict[str, str]
) -> str:
    """config.pbtxt in protobuf text format (tritonclient's model_config_pb2.ModelConfig parses it)."""

    def tensors(key: str, items: list[TensorConfig]) -> str:
        body = ",\n".join(
            f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ {", ".join(map(str, t.dims))} ]\n  }}'
            for t in items
        )
        return f"{key} [\n{body}\n]\n"

    params = "".join(
        f'parameters {{\n  key: "{k}"\n  value {{ string_value: "{v}" }}\n}}\n' for k, v in sorted(parameters.items())
    )
    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch_size}\n'
        f"version_policy {{ all {{ }} }}\n"
        + tensors("input", inputs)
        + tensors("output", outputs)
        + "dynamic_batching { }\n"
        + "instance_group [ { kind: KIND_AUTO } ]\n"
        + params
    )


def export_triton(
    model_dir: Path, out: Path, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, fused: bool = True
) -> list[Path]:
    """Write `<out>/<name>__<role>/` for every graph of the model at `model_dir` (`<models>/<name>`),
    and `<name>__score`, the fused scoring graph (training/fused.py), unless `fused` is false."""
    if max_batch_size < 1:
        raise TritonExportError(f"max_batch_size must be at least 1, got {max_batch_size}")
    name = model_dir.name
    versions = list_versions(model_dir.parent, name)
    if not versions:
        raise TritonExportError(f"{model_dir} holds no version folder with a {MANIFEST_FILE}")
    manifests = {}
    for v in versions:
        folder = model_dir / str(v)
        try:
            manifest = Manifest.read(folder)
            manifest.verify_files(folder, ("onnx",))
        except ValueError as e:  # pydantic's ValidationError is one too
            raise TritonExportError(f"{name} version {v} cannot be exported: {str(e).splitlines()[0]}") from None
        if manifest.ensemble is not None:
            raise TritonExportError(
                f"{name} version {v} is an ensemble of {len(manifest.ensemble.members)} members: export-triton "
                "writes one model's graphs; serve ensembles with latentserve serve, or train one model "
                "(--ensemble 1; the ae on tables is an ensemble of 3 by default)"
            )
        manifests[v] = manifest
    kinds = {m.kind for m in manifests.values()}
    if len(kinds) > 1:
        raise TritonExportError(f"{name}'s versions are of different kinds ({', '.join(sorted(kinds))})")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    roles = [*KIND_GRAPHS[kinds.pop()], *([FUSED_ROLE] if fused else [])]
    for role in roles:
        written.append(_export_role(name, role, model_dir, manifests, out, max_batch_size))
    return written


def _export_role(
    name: str, role: str, model_dir: Path, manifests: dict[int, Manifest], out: Path, max_batch_size: int
) -> Path:
    """One Triton model of the `role` graph of every version."""
    if role != FUSED_ROLE:
        sources = {v: model_dir / str(v) / m.graph(role, "onnx").file for v, m in manifests.items()}
        return _write_model(name, role, model_dir, sources, out, max_batch_size)
    with tempfile.TemporaryDirectory(prefix=".fused-", dir=out) as scratch:
        sources = {}
        for v in manifests:
            sources[v] = Path(scratch) / f"{v}.onnx"
            try:
                write_fused(model_dir / str(v), sources[v])
            except FusedGraphError as e:
                raise TritonExportError(f"{name} version {v}: {e}") from None
        return _write_model(name, role, model_dir, sources, out, max_batch_size)


def _write_model(
    name: str, role: str, model_dir: Path, sources: dict[int, Path], out: Path, max_batch_size: int
) -> Path:
    triton_name = f"{name}__{role}"
    inputs, outputs, parameters = {}, {}, {"latentserve_model": name, "latentserve_role": role}
    for v, source in sources.items():
        inputs[v], outputs[v] = graph_tensors(source)
        parameters[f"manifest_sha256_v{v}"] = sha256_file(model_dir / str(v) / MANIFEST_FILE)
        parameters[f"graph_sha256_v{v}"] = sha256_file(source)
    merged_in, merged_out = merge(triton_name, inputs, "inputs"), merge(triton_name, outputs, "outputs")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{triton_name}-", dir=out))
    try:
        for v, source in sources.items():
            (tmp / str(v)).mkdir()
            shutil.copyfile(source, tmp / str(v) / "model.onnx")
        (tmp / "config.pbtxt").write_text(config_text(triton_name, max_batch_size, merged_in, merged_out, parameters))
        os.chmod(tmp, 0o755)
        target = out / triton_name
        if target.exists():  # a re-export replaces the previous one whole
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
