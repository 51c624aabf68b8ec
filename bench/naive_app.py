"""The app a user would write to serve one of our models: the baseline of `bench.serve`.

FastAPI, async handlers, the body validated by pydantic as `inputs: list[list[float]]`, torch
eager per request, a dict of Python lists returned (FastAPI's default JSON response). Only
what `bench.serve` calls: `/encode` and `/anomaly-score` for ae and rae models.

The eager networks are rebuilt from the artifact alone: `training.train.build_model` from the
training configuration in `manifest.json`, weights from the artifact's TorchScript files (their
state dicts carry the same parameter names). The run's checkpoint would do as well, but the
artifact is what `bench.serve` has; the outputs match the service's (the benchmark checks).
torch runs one intra-op thread, like the service, so that the comparison is about serving.

    LATENTSERVE_MODELS=/tmp/bench_models uvicorn bench.naive_app:app --port 8001
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from training.config import TrainConfig
from training.train import build_model

torch.set_num_threads(1)


class Inputs(BaseModel):
    model: str
    inputs: list[list[float]]


class Model:
    def __init__(self, folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        cfg = TrainConfig.from_dict(manifest["training"])
        net = build_model(cfg, manifest["n_features"]).eval()
        for role in ("encoder", "decoder"):
            getattr(net, role).load_state_dict(torch.jit.load(str(folder / f"{role}.pt")).state_dict())
        self.net = net
        prep = manifest["preprocessing"]
        self.offset = torch.tensor(prep["offset"])
        self.scale = torch.tensor(prep["scale"])
        self.clip = prep["clip"]
        calibration = manifest["calibration"]
        self.quantiles, self.levels = calibration["quantiles"], calibration["levels"]
        self.threshold = calibration["threshold"]

    def preprocess(self, inputs: list[list[float]]) -> torch.Tensor:
        x = (torch.tensor(inputs, dtype=torch.float32) - self.offset) / self.scale
        return x.clamp(0.0, 1.0) if self.clip else x


def load(root: Path) -> dict[str, Model]:
    models = {}
    for folder in sorted(root.iterdir()):
        versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
        if versions:
            manifest = json.loads((folder / str(max(versions)) / "manifest.json").read_text())
            if manifest["kind"] in ("ae", "rae") and manifest["likelihood"] == "mse":
                models[folder.name] = Model(folder / str(max(versions)))
    return models


MODELS = load(Path(os.environ.get("LATENTSERVE_MODELS", "model_repository")))
app = FastAPI(title="naive")


@app.get("/readyz")
async def readyz():
    return {"status": "ready"}


def get(name: str) -> Model:
    if name not in MODELS:
        raise HTTPException(404, f"no model {name}")
    return MODELS[name]


@app.post("/encode")
async def encode(body: Inputs):
    model = get(body.model)
    with torch.no_grad():
        z = model.net.encoder(model.preprocess(body.inputs))
    return {"model": body.model, "latents": z.tolist()}


@app.post("/anomaly-score")
async def anomaly_score(body: Inputs):
    model = get(body.model)
    with torch.no_grad():
        x = model.preprocess(body.inputs)
        scores = ((x - model.net(x)) ** 2).mean(dim=1).numpy()  # mean per-feature squared error
    return {
        "model": body.model,
        "scores": scores.tolist(),
        "threshold": model.threshold,
        "is_anomaly": (scores > model.threshold).tolist(),
        "percentiles": (100 * np.interp(scores, model.quantiles, model.levels)).tolist(),
    }
