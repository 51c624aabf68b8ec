"""Property-based requests generated from the live OpenAPI document against a real server.

Schemathesis (the CLI, so that its coverage phase runs too: boundary values, missing and extra
fields, wrong types, unsupported methods) fuzzes every operation, the admin one included (a
key is set), with the API key and without it. Pass: no 5xx and no response that breaks the
documented schema, status code, content type or headers; invalid data always rejected; no
endpoint served without the key. Bounded: a fixed seed, a cap on examples and on time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "fuzz-key-0123456789abcdef"
# Every check but positive_data_acceptance: data valid by the schema can still name an unknown
# model or send rows of the wrong width, which the schema cannot know (models change by reload).
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
BUDGET = ["--max-examples", "12", "--max-time", "30", "--seed", "20261128", "--workers", "1"]


def test_fuzz_finds_no_server_error_and_no_schema_violation(models_dir, tmp_path):
    server = LiveServer(
        models_dir,
        tmp_path / "serve.log",
        "--max-rows",
        "100",
        "--max-body-bytes",
        "65536",
        env={"LATENTSERVE_API_KEY": KEY},
    )
    try:
        server.wait()
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--no-color",
            "run",
            f"{server.url}/openapi.json",
        ]
        command += ["--header", f"Authorization: Bearer {KEY}", *CHECKS, *BUDGET]
        command += ["--phases", "examples,coverage,fuzzing"]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    finally:
        exit_code = server.stop()
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "passed" in done.stdout and " generated" in done.stdout, report
    assert exit_code == 0 and "Traceback" not in server.output(), server.output()[-3000:]
    assert KEY not in server.output()  # sent with every request, never logged


# ----- the hostile numbers random generation rarely reaches -----------------------------------------
EXTREMES = [3.4e38, -3.4e38, 1e38, -1e30, 1e-45, 0.0]


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["digits-ae", "digits-rae", "digits-vae", "digits-gan"])
async def test_extreme_numbers_give_numbers_or_a_422_never_null(models_dir, onnx_repository, model):
    app = create_app(Settings(models=models_dir), onnx_repository)
    rows = [[v] * 64 for v in EXTREMES] + [[EXTREMES[i % len(EXTREMES)] for i in range(64)]]
    latents = [[v] * 16 for v in EXTREMES] + [[EXTREMES[i % len(EXTREMES)] for i in range(16)]]
    requests = [("/sample", {"model": model, "latents": [z]}) for z in latents]
    requests += [("/sample", {"model": model, "n": 3, "seed": 0, "temperature": 1e6})]
    for path in ("/encode", "/reconstruct", "/anomaly-score"):
        requests += [(path, {"model": model, "inputs": [x], "explain": True}) for x in rows]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        for path, body in requests:
            if path != "/anomaly-score":
                body.pop("explain", None)
            if path == "/anomaly-score" and model == "digits-gan":
                body.pop("explain")
            r = await c.post(path, json=body)
            assert r.status_code in (200, 400, 422), (path, body, r.text)
            assert "null" not in r.text and "NaN" not in r.text, (path, r.text[:200])
            if r.status_code == 422:
                assert "overflow float32" in r.json()["error"] or "finite" in r.json()["error"], r.text
