"""A fused scoring ONNX graph per model version: preprocessing, the graphs, the anomaly score, in one.

Input `x` FP32 [batch, F] in raw units (what /anomaly-score takes); outputs `score` FP32 [batch, 1]
(the calibration method's score, as `artifact.scores` computes it) and `is_anomaly` BOOL [batch, 1]
(score > the manifest's threshold). Triton, or any ONNX runtime, then gives the scores that
/anomaly-score gives (to 1e-4; float32 throughout, where the service computes some terms in float64).

The model's own graphs are inlined unchanged (names prefixed); the rest are standard opset-17 ops.
Constants that define a method (the vae's fixed ε draws, the gan's decoded latent-search bank, the
ae's latent prior) are taken from `artifact.scores`, so that both compute the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from artifact import scores as scoring
from artifact.manifest import Manifest

OPSET = 17
FUSED_ROLE = "score"


class FusedGraphError(RuntimeError):
    """This model's score cannot be written as one ONNX graph."""


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value: np.ndarray | float | list[float], dtype: type = np.float32) -> str:
        name = f"c{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs: Any) -> str:
        self.count += 1
        out = f"{kind.lower()}{self.count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def inline(self, path: Path, prefix: str, inputs: list[str]) -> list[str]:
        """The graph at `path` with every name prefixed, fed by `inputs`; returns its outputs' names."""
        model = onnx.compose.add_prefix(onnx.load(str(path)), prefix)
        graph = model.graph
        for source, target in zip(inputs, graph.input):
            self.nodes.append(helper.make_node("Identity", [source], [target.name]))
        self.nodes.extend(graph.node)
        self.initializers.extend(graph.initializer)
        return [o.name for o in graph.output]

    def row_sum(self, x: str) -> str:  # (B, F) -> (B, 1)
        return self.op("ReduceSum", x, self.const(np.array([1]), np.int64), keepdims=1)


def fused_score_graph(folder: Path) -> onnx.ModelProto:
    """The fused scoring graph of the artifact at `folder` (`<models>/<name>/<version>`)."""
    m = Manifest.read(folder)
    if m.ensemble is not None:
        raise FusedGraphError(f"{folder} is an ensemble: a fused graph holds one model's graphs")
    method = m.calibration.method
    b = _Builder()
    graph = {role: folder / m.graph(role, "onnx").file for role in m.graphs}
    p = m.preprocessing
    xr = b.op("Div", b.op("Sub", "x", b.const(p.offset)), b.const(p.scale))  # raw -> model space, not clipped
    # What the graphs see (clipped to [0, 1] for min-max and image models), and the out-of-range term that
    # artifact.scores adds to cross-entropy scores: the squared distance outside [0, 1] per row.
    x = b.op("Clip", xr, b.const(0.0), b.const(1.0)) if p.clip else xr
    excess = b.row_sum(_sq(b, xr, x)) if p.clip else None

    def target(likelihood: str) -> str:  # squared errors on the rows as they are, cross-entropies on [0, 1]
        return xr if likelihood in ("mse", "gaussian") else x

    def with_excess(score: str, likelihood: str, weight: float) -> str:
        if excess is None or likelihood in ("mse", "gaussian"):
            return score
        return b.op("Add", score, b.op("Mul", excess, b.const(weight)))

    f = float(m.n_features)
    if method in ("reconstruction-mse", "reconstruction-bce"):
        likelihood = method.removeprefix("reconstruction-")
        (z,) = b.inline(graph["encoder"], "encoder/", [x])
        (x_hat,) = b.inline(graph["decoder"], "decoder/", [z])
        score = b.op("Div", b.row_sum(_terms(b, target(likelihood), x_hat, likelihood)), b.const(f))
        score = with_excess(score, likelihood, 1.0 / f)
    elif method == "ae-joint-gaussian":
        if m.latent_prior is None:
            raise FusedGraphError("the ae-joint-gaussian score needs the manifest's latent_prior")
        (z,) = b.inline(graph["encoder"], "encoder/", [x])
        (x_hat,) = b.inline(graph["decoder"], "decoder/", [z])
        inverse = np.linalg.inv(np.asarray(m.latent_prior.cholesky, np.float64)).T  # white = (z - mean) L⁻ᵀ
        white = b.op("MatMul", b.op("Sub", z, b.const(m.latent_prior.mean)), b.const(inverse))
        recon = b.row_sum(b.op("Mul", _sq(b, xr, x_hat), b.const(0.5)))
        score = b.op("Add", recon, b.op("Mul", b.row_sum(b.op("Mul", white, white)), b.const(0.5)))
    elif method.startswith("negative-elbo-"):
        likelihood = method.split("-")[2]
        mu, logvar = b.inline(graph["encoder"], "encoder/", [x])[:2]
        if method.endswith("-posterior-draws"):
            terms = _draws_terms(
                b, target(likelihood), mu, logvar, graph["decoder"], m.n_features, m.latent_dim, likelihood
            )
        elif method.endswith("-posterior-mean"):
            (x_hat,) = b.inline(graph["decoder"], "decoder/", [mu])
            terms = _terms(b, target(likelihood), x_hat, likelihood)
        else:
            raise FusedGraphError(f"unknown vae score method {method!r}")
        if likelihood == "gaussian":
            terms = b.op("Mul", terms, b.const(0.5))
        kl = b.op("Sub", b.op("Add", b.op("Mul", mu, mu), b.op("Exp", logvar)), b.op("Add", logvar, b.const(1.0)))
        score = b.op("Add", b.row_sum(terms), b.op("Mul", b.row_sum(kl), b.const(0.5)))
        score = with_excess(score, likelihood, 1.0)
    elif method == "neg-log-discriminator":
        logit = b.inline(graph["discriminator"], "discriminator/", [x])[0]
        score = b.op("Softplus", b.op("Neg", logit))
        score = with_excess(score, "bce", 1.0)
    elif method == "gan-latent-search":
        session = ort.InferenceSession(str(graph["generator"]), providers=["CPUExecutionProvider"])
        bank = session.run(None, {session.get_inputs()[0].name: scoring.gan_search_latents(m.latent_dim)})[0]
        score = _search_score(b, xr, bank.astype(np.float32), f)
    else:
        raise FusedGraphError(f"no fused graph for the score method {method!r}")
    b.nodes.append(helper.make_node("Identity", [score], ["score"]))
    b.nodes.append(helper.make_node("Greater", ["score", b.const(m.calibration.threshold)], ["is_anomaly"]))
    rows = ["batch"]
    fused = helper.make_graph(
        b.nodes,
        f"{m.name}__score",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*rows, m.n_features])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [*rows, 1]),
            helper.make_tensor_value_info("is_anomaly", TensorProto.BOOL, [*rows, 1]),
        ],
        b.initializers,
    )
    model = helper.make_model(fused, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="latentserve")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _sq(b: _Builder, x: str, x_hat: str) -> str:
    d = b.op("Sub", x, x_hat)
    return b.op("Mul", d, d)


def _terms(b: _Builder, x: str, x_hat: str, likelihood: str) -> str:
    """scoring.reconstruction_terms: (B, F) squared error or cross-entropy."""
    if likelihood in ("mse", "gaussian"):
        return _sq(b, x, x_hat)
    if likelihood in ("bce", "bernoulli"):
        p = b.op("Clip", x_hat, b.const(scoring.EPS), b.const(1.0 - scoring.EPS))
        one = b.const(1.0)
        first = b.op("Mul", x, b.op("Log", p))
        second = b.op("Mul", b.op("Sub", one, x), b.op("Log", b.op("Sub", one, p)))
        return b.op("Neg", b.op("Add", first, second))
    raise FusedGraphError(f"no reconstruction term for likelihood {likelihood!r}")


def _draws_terms(b: _Builder, x: str, mu: str, logvar: str, decoder: Path, f: int, latent: int, likelihood: str) -> str:
    """scoring.vae_draws_score's terms: the mean over the fixed ε draws of each feature's cost."""
    eps = scoring.vae_draws(latent)  # (K, L)
    k = len(eps)
    std = b.op("Exp", b.op("Mul", logvar, b.const(0.5)))  # (B, L)
    axis1 = b.const(np.array([1]), np.int64)
    z = b.op("Add", b.op("Unsqueeze", mu, axis1), b.op("Mul", b.op("Unsqueeze", std, axis1), b.const(eps[None])))
    flat = b.op("Reshape", z, b.const(np.array([-1, latent]), np.int64))  # (B*K, L), row-major: row b, draw k
    (x_hat,) = b.inline(decoder, "decoder/", [flat])
    x_rep = b.op(
        "Reshape",
        b.op("Expand", b.op("Unsqueeze", x, axis1), b.const(np.array([1, k, 1]), np.int64)),
        b.const(np.array([-1, f]), np.int64),
    )
    terms = b.op("Reshape", _terms(b, x_rep, x_hat, likelihood), b.const(np.array([-1, k, f]), np.int64))
    return b.op("ReduceMean", terms, axes=[1], keepdims=0)  # (B, F)


def _search_score(b: _Builder, x: str, bank: np.ndarray, f: float) -> str:
    """scoring.gan_search_score: the squared distance to the nearest decoded bank row, / F."""
    g = b.const(bank)  # (K, F)
    xx = b.row_sum(b.op("Mul", x, x))  # (B, 1)
    d2 = b.op(
        "Add",
        b.op("Sub", xx, b.op("Mul", b.op("MatMul", x, b.const(bank.T)), b.const(2.0))),
        b.const((bank**2).sum(axis=1)),
    )
    nearest = b.op("ArgMin", d2, axis=1, keepdims=0)  # (B,)
    residual = b.op("Sub", x, b.op("Gather", g, nearest, axis=0))
    return b.op("Div", b.row_sum(b.op("Mul", residual, residual)), b.const(f))


def write_fused(folder: Path, path: Path) -> None:
    onnx.save(fused_score_graph(folder), str(path))
