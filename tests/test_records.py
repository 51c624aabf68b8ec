"""`records` (rows keyed by feature name) beside `inputs` on the model endpoints, and /models' names."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.settings import Settings
from training.cli import main

pytestmark = pytest.mark.anyio
NAMES = ["alcohol", "malic_acid", "ash", "hue"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def named_models(tmp_path_factory) -> Path:
    """An ae trained (one epoch) on a CSV with an id column, four named features and a label column;
    another on an .npy table, which has no names."""
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    lines = ["id," + ",".join(NAMES) + ",label"]
    lines += [f"r{i}," + ",".join(f"{v:.3f}" for v in rng.normal(size=4)) + ",a" for i in range(200)]
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    args = ["train", "ae", "--data", str(root / "t.csv"), "--name", "wine-ae", "--drop-columns", "id,label"]
    assert (
        main([*args, "--epochs", "1", "--models", str(root / "models"), "--runs", str(root / "runs"), "--quiet"]) == 0
    )
    np.save(root / "plain.npy", rng.normal(size=(200, 4)).astype(np.float32))
    args = ["train", "ae", "--data", str(root / "plain.npy"), "--name", "plain-ae"]
    assert (
        main([*args, "--epochs", "1", "--models", str(root / "models"), "--runs", str(root / "runs"), "--quiet"]) == 0
    )
    return root / "models"


@pytest.fixture
async def client(named_models, load_repository):
    app = create_app(Settings(models=named_models), load_repository(named_models, max_rows=100))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


ROWS = [[0.1, -0.2, 0.3, 1.5], [2.0, 0.0, -1.0, 0.25]]
RECORDS = [dict(zip(NAMES, row)) for row in ROWS]
REVERSED = [dict(reversed(list(r.items()))) for r in RECORDS]  # key order does not matter


@pytest.mark.parametrize("path", ["/encode", "/reconstruct", "/anomaly-score"])
async def test_records_answer_as_inputs_do(client, path):
    by_rows = await client.post(path, json={"model": "wine-ae", "inputs": ROWS})
    by_records = await client.post(path, json={"model": "wine-ae", "records": REVERSED})
    assert by_rows.status_code == by_records.status_code == 200, by_records.text
    assert by_records.json() == by_rows.json()


async def test_models_lists_feature_names_in_order(client):
    info = (await client.get("/models/wine-ae")).json()
    assert info["versions"][0]["feature_names"] == NAMES


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"records": [RECORDS[0], {k: v for k, v in RECORDS[1].items() if k != "ash"}]}, "records[1] misses 'ash'"),
        ({"records": [{**RECORDS[0], "colour": 1.0}]}, "records[0] has unknown 'colour'"),
        (
            {"records": [{"alcohol": 1.0, "Ash": 2.0, "malic_acid": 0.0, "hue": 0.0}]},
            "records[0] misses 'ash' and has unknown 'Ash': model 'wine-ae' expects exactly the feature names "
            "'alcohol', 'malic_acid', 'ash', 'hue'",
        ),
        ({"records": RECORDS, "inputs": ROWS}, "not both"),
        ({}, "inputs is required"),
        ({"records": []}, "records is empty"),
        ({"records": [{**RECORDS[0], "hue": "1.5"}]}, "records[0].hue should be a number"),
        ({"records": [RECORDS[0]] * 101}, "at most 100"),
    ],
)
async def test_bad_records_are_422_naming_the_problem(client, body, needle):
    r = await client.post("/anomaly-score", json={"model": "wine-ae", **body})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"], r.json()


async def test_records_need_a_model_with_feature_names(client):
    r = await client.post("/encode", json={"model": "plain-ae", "records": [{"a": 1.0}]})
    assert r.status_code == 422
    assert "has no feature names" in r.json()["error"] and "rows of 4 values" in r.json()["error"]
