"""What each OIP model is: `<name>.<operation>` over one latentserve model, its tensors, and its run.

Every operation a model's kind serves is one OIP model (`digits-vae.encode`, `digits-vae.reconstruct`,
`digits-vae.sample`, `digits-vae.anomaly-score`); the bare name is the kind's main operation
(`MAIN_OPERATION`). Tensors are named as the graphs name them (`x`, `z`, `mu`, `logvar`, `x_hat`)
and hold raw units, as the native endpoints do; the run goes through the app's micro-batching,
so that OIP and native requests for one model share batches and give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidInput, PayloadTooLarge
from service.oip_codec import BadTensor, InferRequest, Tensor

OPERATIONS = ("encode", "reconstruct", "sample", "anomaly-score")
# The bare model name: what an autoencoder is for (x -> g(f(x))) and what a GAN is for (z -> G(z)).
MAIN_OPERATION = {"ae": "reconstruct", "rae": "reconstruct", "vae": "reconstruct", "gan": "sample"}
FLOAT_INPUTS = ("FP32", "FP64", "FP16")  # FP64 and FP16 are converted to FP32


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: list[int]  # -1: the batch axis

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def signature(manifest: Any, operation: str) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of `operation` on a model with this manifest, as the metadata lists them."""
    f, latent = manifest.n_features, manifest.latent_dim
    x, z, x_hat = (
        TensorInfo("x", "FP32", [-1, f]),
        TensorInfo("z", "FP32", [-1, latent]),
        TensorInfo("x_hat", "FP32", [-1, f]),
    )
    if operation == "encode":
        if manifest.kind == "vae":  # z is the posterior mean, as the native `latents`
            return [x], [z, TensorInfo("mu", "FP32", [-1, latent]), TensorInfo("logvar", "FP32", [-1, latent])]
        return [x], [z]
    if operation == "reconstruct":
        return [x], [x_hat]
    if operation == "sample":
        return [z], [x_hat]
    # FP64: some score methods compute in float64 (the vae's posterior draws); float32 ones widen exactly.
    outputs = [TensorInfo("score", "FP64", [-1]), TensorInfo("is_anomaly", "BOOL", [-1])]
    outputs.append(TensorInfo("percentile", "FP64", [-1]))  # NumPy's interp: float64, as /anomaly-score sends
    if manifest.calibration.method != "neg-log-discriminator":  # with parameters.explain
        outputs.append(TensorInfo("contributions", "FP32", [-1, f]))
    return [x], outputs


async def run(batching: Any, model: Any, operation: str, request: InferRequest) -> tuple[dict[str, np.ndarray], dict]:
    """The outputs by name (every one the operation gives) and the response parameters."""
    wanted = {o.name for o in request.outputs or ()}
    try:
        if operation == "sample":
            return {"x_hat": await batching.run(model, "sample", _latents(model, request))}, {}
        explain = _flag(request.parameters, "explain") or (operation == "anomaly-score" and "contributions" in wanted)
        x = model.inputs(
            _matrix(request, "x", model.manifest.n_features, model.max_rows, "features"), operation, explain
        )
        if operation == "encode":
            encoded = await batching.run(model, "encode", x)
            return {"z": encoded["latents"], **{k: v for k, v in encoded.items() if k != "latents"}}, {}
        if operation == "reconstruct":
            return {"x_hat": await batching.run(model, "reconstruct", x)}, {}
        result = await batching.run(model, "anomaly-score", x, explain=explain)
    except InvalidInput as e:  # the runtime's 422: a bad tensor, 400 in this protocol
        raise BadTensor(e.message) from None
    outputs = {
        "score": np.asarray(result.scores, np.float64),
        "is_anomaly": np.asarray(result.is_anomaly, bool),
        "percentile": np.asarray(result.percentiles, np.float64),
    }
    if result.contributions is not None:
        outputs["contributions"] = result.contributions
    m = model.manifest
    return outputs, {"threshold": float(result.threshold), "score_method": m.calibration.method}


def _latents(model: Any, request: InferRequest) -> np.ndarray:
    """The z input, or n draws (parameters n, seed, temperature) when the request sends none."""
    p = request.parameters
    if request.inputs:
        z = _matrix(request, "z", model.manifest.latent_dim, model.max_rows, "latent values")
        return model.sample_latents(None, None, 1.0, z)
    n, seed, temperature = p.get("n"), p.get("seed"), p.get("temperature", 1.0)
    if n is None:
        raise BadTensor(f"send an input z (FP32 [-1, {model.manifest.latent_dim}]), or parameters.n to draw n samples")
    if type(n) is not int or n < 1:
        raise BadTensor(f"parameters.n must be a positive integer, got {n!r}")
    if n > model.max_rows:
        raise PayloadTooLarge(f"parameters.n is {n}; the limit is {model.max_rows} rows (LATENTSERVE_MAX_ROWS)")
    if seed is not None and (type(seed) is not int or not 0 <= seed < 2**63):
        raise BadTensor(f"parameters.seed must be an integer from 0 to 2**63-1, got {seed!r}")
    if type(temperature) not in (int, float):
        raise BadTensor(f"parameters.temperature must be a number, got {temperature!r}")
    return model.sample_latents(n, seed, float(temperature), None)


def _matrix(request: InferRequest, name: str, width: int, max_rows: int, unit: str) -> np.ndarray:
    """The one input `name` as a (B, width) float32 matrix; BadTensor (or 413) saying what is wrong."""
    names = [t.name for t in request.inputs]
    if names != [name]:
        got = ", ".join(repr(n) for n in names) or "none"
        raise BadTensor(f"expected one input named {name!r} (FP32 [-1, {width}]); got {got}")
    tensor: Tensor = request.inputs[0]
    if tensor.datatype not in FLOAT_INPUTS:
        raise BadTensor(
            f"input {name!r} must be FP32 (FP64 and FP16 are converted to FP32); got datatype {tensor.datatype}"
        )
    shape = list(tensor.array.shape)
    if len(shape) != 2 or shape[1] != width:
        raise BadTensor(f"input {name!r} must have shape [-1, {width}] (rows, {unit}); got {shape}")
    if shape[0] == 0:
        raise BadTensor(f"input {name!r} has no rows: shape {shape}")
    if shape[0] > max_rows:
        raise PayloadTooLarge(f"input {name!r} has {shape[0]} rows; the limit is {max_rows} (LATENTSERVE_MAX_ROWS)")
    with np.errstate(over="ignore"):
        x = tensor.array.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(x))[0])
        value = tensor.array[i, j].item()
        raise BadTensor(f"input {name!r}[{i}][{j}] is not a finite float32 number (got {value!r})")
    return x


def _flag(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise BadTensor(f"parameters.{name} must be true or false, got {value!r}")
    return value
