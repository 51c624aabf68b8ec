"""Export a trained checkpoint: ONNX + TorchScript graphs, parity check, score calibration, manifest.

The artifact is written into `<models>/<name>/.tmp-*`, every file hashed, the manifest written last,
then the folder renamed to the next free version. An existing version is never overwritten.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from artifact import scores as scoring
from artifact.graphs import Backend, onnx_session
from artifact.manifest import (
    GRAPH_IO,
    KIND_CAPABILITIES,
    Calibration,
    Ensemble,
    EnsembleMember,
    GraphSpec,
    LatentPrior,
    Manifest,
    Preprocessing,
    TensorSpec,
    list_versions,
    sha256_file,
)
from artifact.predictor import Predictor
from artifact.transforms import to_raw_space
from models.networks import bake_parametrizations
from training.config import TrainConfig
from training.train import build_model

PARITY_BATCHES = (1, 7, 256)
# |exported − eager| ≤ PARITY_TOLERANCE · max(1, max |eager|): absolute for outputs of order one,
# relative for large ones (float32 sums over a 1,555-feature row differ by ~1e-7 of their magnitude
# with the summation order: ADBench internetads' codes, |z| in the hundreds, differed by 1.2e-4)
PARITY_TOLERANCE = 1e-4


def parity_bound(expected: np.ndarray) -> float:
    """The largest |exported − eager| accepted for an output whose eager value is `expected`."""
    return PARITY_TOLERANCE * max(1.0, float(np.max(np.abs(expected), initial=0.0)))


class ExportError(RuntimeError):
    """The export could not produce a faithful artifact; nothing was published."""


def load_checkpoint(path: Path) -> dict:
    if not Path(path).is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"cannot read checkpoint {path}: {first_line}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != "latentserve-checkpoint-1":
        raise ExportError(f"{path} is not a latentserve checkpoint")
    return ckpt


def export_checkpoint(ckpt: dict, models_dir: Path, name: str | None = None) -> Path:
    """Publish the checkpoint as the next version of `name`; returns the version folder."""
    return export_ensemble([ckpt], models_dir, name)


def export_ensemble(ckpts: list[dict], models_dir: Path, name: str | None = None) -> Path:
    """Publish one model, or (several checkpoints) an ensemble of them served as one model.

    The checkpoints of an ensemble are one kind trained on the same rows with different seeds
    (`TrainConfig.ensemble`); the first one's config, data and calibration rows are the artifact's.
    Its graphs keep their plain names, member i's are prefixed `member<i>-`."""
    first = ckpts[0]
    cfg = TrainConfig.from_dict(first["config"])
    name = name or cfg.name
    x_val = first["x_val"].numpy().astype(np.float32)  # (N, F) model space: parity inputs
    prep = Preprocessing(**first["preprocessing"])
    # Calibration rows, raw units: a split no training decision saw (older checkpoints: the validation rows).
    x_cal = first["x_cal_raw"].numpy() if "x_cal_raw" in first else to_raw_space(x_val, prep)
    parent = Path(models_dir) / name
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        method, description = _score_method(cfg)
        provisional = _provisional(method, description, cfg.contamination)
        members = []
        for i, ckpt in enumerate(ckpts):
            member_cfg = TrainConfig.from_dict(ckpt["config"])
            model = build_model(member_cfg, ckpt["n_features"])
            model.load_state_dict(ckpt["state_dict"])
            bake_parametrizations(model)
            member_x_val = ckpt["x_val"].numpy().astype(np.float32)
            prefix = f"member{i}-" if i else ""
            graphs = {
                role: _export_graph(cfg.kind, role, module, _golden(member_cfg, role, model, member_x_val), tmp, prefix)
                for role, module in model.graphs().items()
            }
            prior = LatentPrior(**ckpt["latent_prior"]) if ckpt.get("latent_prior") else None
            members.append(
                dict(
                    graphs=graphs,
                    preprocessing=Preprocessing(**ckpt["preprocessing"]),
                    latent_prior=prior,
                    seed=member_cfg.seed,
                )
            )
        manifest_fields = dict(
            name=name,
            kind=cfg.kind,
            capabilities=list(KIND_CAPABILITIES[cfg.kind]),
            n_features=first["n_features"],
            feature_names=first.get("feature_names"),
            image_shape=first.get("image_shape"),
            latent_dim=cfg.latent_dim,
            likelihood=_likelihood(cfg),
            preprocessing=prep,
            graphs=members[0]["graphs"],
            calibration=provisional,
            latent_prior=members[0]["latent_prior"],
            training=cfg.to_dict(),
            metrics=first["metrics"],
            data=first["data"],
            versions=_library_versions(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if len(members) > 1:
            # Each member's own score on the calibration rows: its mean and std normalise it.
            for member in members:
                single = {**manifest_fields, **{k: member[k] for k in ("graphs", "preprocessing", "latent_prior")}}
                raw = _calibration_scores(Manifest(version=1, **single), tmp, x_cal)
                member["score_mean"], member["score_std"] = float(raw.mean()), max(float(raw.std()), 1e-12)
            manifest_fields["ensemble"] = Ensemble(members=[EnsembleMember(**m) for m in members])
            manifest_fields["metrics"] = {**first["metrics"], "ensemble_members": len(members)}
            description = (
                f"mean over {len(members)} members (seeds {', '.join(str(m['seed']) for m in members)}) of each "
                f"member's score z-normalised on the calibration rows; member score: {description}"
            )
        scores = _calibration_scores(Manifest(version=1, **manifest_fields), tmp, x_cal)
        manifest_fields["calibration"] = scoring.calibrate(scores, cfg.contamination, method, description)
        return _publish(tmp, parent, manifest_fields)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _likelihood(cfg: TrainConfig) -> str:
    return {"ae": cfg.reconstruction, "rae": cfg.reconstruction, "vae": cfg.likelihood, "gan": "adversarial"}[cfg.kind]


def _score_method(cfg: TrainConfig) -> tuple[str, str]:
    """The score's name (artifact.scores.anomaly_scores computes it) and a one-line description.
    Checkpoints from before `score` existed get the scores they were made with."""
    if cfg.kind in ("ae", "rae") and cfg.score in ("joint", "balanced"):
        scaled = {
            "joint": "the training residual has unit variance",
            "balanced": "both terms have the same median on the training rows",
        }[cfg.score]
        return "ae-joint-gaussian", (
            f"½‖x − x̂‖² + ½ Mahalanobis²(z) under the latent Gaussian, in model space scaled so that {scaled}"
        )
    if cfg.kind in ("ae", "rae"):
        return f"reconstruction-{cfg.reconstruction}", "mean per-feature reconstruction error in model space"
    if cfg.kind == "vae" and cfg.score == "elbo-draws":
        return (
            f"negative-elbo-{cfg.likelihood}-posterior-draws",
            f"negative ELBO: reconstruction term averaged over {scoring.VAE_DRAWS} fixed posterior draws "
            "z = mu + sigma * eps, plus closed-form KL",
        )
    if cfg.kind == "vae":
        return (
            f"negative-elbo-{cfg.likelihood}-posterior-mean",
            "negative ELBO with z = mu (deterministic): reconstruction term of x̂ = g(mu) plus closed-form KL",
        )
    if cfg.score == "search":
        return "gan-latent-search", (
            f"min over {scoring.GAN_SEARCH_LATENTS} fixed latents z of ‖x − G(z)‖² / F: reconstruction "
            "through a latent search"
        )
    return "neg-log-discriminator", "−log D(x) from the discriminator's logit"


def _golden(cfg: TrainConfig, role: str, model: nn.Module, x_val: np.ndarray) -> dict[int, np.ndarray]:
    """Golden inputs per parity batch size: validation rows (tiled if too few), or latents for decoders."""
    rows = np.resize(x_val, (max(PARITY_BATCHES), x_val.shape[1])).astype(np.float32)  # repeats rows if needed
    if role in ("encoder", "discriminator"):
        base = rows
    elif role == "decoder":
        with torch.no_grad():
            out = model.encoder(torch.from_numpy(rows))
        base = (out[0] if isinstance(out, tuple) else out).numpy()
    else:
        base = np.random.default_rng(cfg.seed).standard_normal((len(rows), cfg.latent_dim)).astype(np.float32)
    return {b: np.ascontiguousarray(base[:b]) for b in PARITY_BATCHES}


def _export_graph(
    kind: str, role: str, module: nn.Module, golden: dict[int, np.ndarray], folder: Path, prefix: str = ""
):
    in_names, out_names = GRAPH_IO[(kind, role)]
    example = torch.from_numpy(golden[7])
    module = module.cpu().eval()
    onnx_path, ts_path = folder / f"{prefix}{role}.onnx", folder / f"{prefix}{role}.pt"
    axes = {n: {0: "batch"} for n in in_names + out_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(
            module,
            (example,),
            str(onnx_path),
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
        traced = torch.jit.trace(module, (example,))
    torch.jit.save(traced, str(ts_path))
    _check_parity(role, module, onnx_path, ts_path, golden, out_names)

    with torch.no_grad():
        outs = module(example)
    outs = outs if isinstance(outs, tuple) else (outs,)
    ins = [TensorSpec(name=in_names[0], shape=["batch", example.shape[1]])]
    outs_spec = [TensorSpec(name=n, shape=["batch", o.shape[1]]) for n, o in zip(out_names, outs)]
    return {
        fmt: GraphSpec(file=p.name, format=fmt, sha256=sha256_file(p), inputs=ins, outputs=outs_spec)
        for fmt, p in (("onnx", onnx_path), ("torchscript", ts_path))
    }


def _check_parity(role, module, onnx_path, ts_path, golden, out_names) -> None:
    session = onnx_session(onnx_path)
    scripted = torch.jit.load(str(ts_path))
    for batch, x in golden.items():
        with torch.no_grad():
            eager = module(torch.from_numpy(x))
            script = scripted(torch.from_numpy(x))
        eager = eager if isinstance(eager, tuple) else (eager,)
        script = script if isinstance(script, tuple) else (script,)
        onnx_out = session.run(out_names, {session.get_inputs()[0].name: x})
        for name, e, s, o in zip(out_names, eager, script, onnx_out):
            expected = e.numpy()
            bound = parity_bound(expected)  # one bound for both runtimes
            for fmt, got in (("onnx", o), ("torchscript", s.numpy())):
                diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else math.inf
                if not diff <= bound:
                    raise ExportError(
                        f"{role} {fmt} output {name!r} differs from eager PyTorch at batch size {batch}: "
                        f"max |diff| = {diff:.3g} > {bound:.3g}"
                    )


def _provisional(method: str, description: str, contamination: float) -> Calibration:
    """A placeholder calibration for the manifest the calibration itself is computed through."""
    return Calibration(
        method=method,
        description=description,
        n_rows=0,
        levels=[0.0, 1.0],
        quantiles=[0.0, 0.0],
        contamination=contamination,
        threshold=0.0,
    )


def _calibration_scores(manifest: Manifest, folder: Path, x_cal: np.ndarray) -> np.ndarray:
    """Each calibration row's anomaly score through the exported ONNX graphs, by the `Predictor`
    the service runs: the served scores and their calibration come from one code path."""
    backend = Backend("onnx", "cpu", threads=1)
    predictor = Predictor(folder, backend, max_rows=max(1, len(x_cal)), manifest=manifest)
    predictor.load()
    if predictor.state != "ready":
        raise ExportError(f"the exported artifact does not load: {predictor.reason}")
    return predictor.scores(x_cal)[0]


def _library_versions() -> dict[str, str]:
    import sklearn

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _publish(tmp: Path, parent: Path, fields: dict) -> Path:
    """Write the manifest last, then rename into the next free version (retrying if one appears)."""
    for _ in range(100):
        version = max(list_versions(parent.parent, parent.name), default=0) + 1
        # also skip version folders that exist without a manifest (never overwrite anything)
        while (parent / str(version)).exists():
            version += 1
        Manifest(version=version, **fields).write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the service may run as another user
        try:
            os.rename(tmp, parent / str(version))  # atomic; fails if the target appeared meanwhile
        except OSError:
            continue
        return parent / str(version)
    raise ExportError(f"could not find a free version folder under {parent}")
