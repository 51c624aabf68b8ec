"""The large-data path (training/sources.py): a memory-mapped .npy and a streamed CSV train what the
in-memory path trains, and refuse bad files with the in-memory reader's messages."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch

from tests.test_training_cli import BAD_CSV
from training import pipeline, sources
from training.config import TrainConfig
from training.data import DataError
from training.rows import MappedRows
from training.train import fit


@pytest.fixture
def table(tmp_path) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(900, 12)) @ rng.normal(size=(12, 12)) * 5 + 40  # correlated, off-centre columns
    return x.astype(np.float32)


def _prepared(monkeypatch, path, mapped: bool, **options):
    monkeypatch.setenv("LATENTSERVE_MAP_BYTES", "0" if mapped else str(2**40))
    cfg = TrainConfig(kind=options.pop("kind", "ae"), name="big", data=str(path), epochs=2, **options)
    return pipeline.prepare(cfg)


@pytest.mark.parametrize("scaling", ["standard", "robust", "minmax"])
def test_mapped_npy_prepares_the_in_memory_rows(monkeypatch, tmp_path, table, scaling):
    np.save(tmp_path / "t.npy", table)
    cfg_a, _, prep_a, xt_a, xv_a = _prepared(monkeypatch, tmp_path / "t.npy", mapped=False, scaling=scaling)
    cfg_b, ds_b, prep_b, xt_b, xv_b = _prepared(monkeypatch, tmp_path / "t.npy", mapped=True, scaling=scaling)
    assert isinstance(ds_b.x, np.memmap) and isinstance(xt_b, MappedRows)
    assert not isinstance(xt_a, MappedRows)
    np.testing.assert_allclose(prep_b.offset, prep_a.offset, rtol=1e-12)
    np.testing.assert_allclose(prep_b.scale, prep_a.scale, rtol=1e-12)
    assert len(xt_b) == len(xt_a) and len(xv_b) == len(xv_a)
    np.testing.assert_allclose(xt_b.take(np.arange(len(xt_b))), xt_a, atol=1e-6)
    np.testing.assert_allclose(np.asarray(xv_b), xv_a, atol=1e-6)


def test_mapped_npy_trains_the_in_memory_parameters(monkeypatch, tmp_path, table):
    np.save(tmp_path / "t.npy", table)
    params = []
    for mapped in (False, True):
        cfg, _, _, xt, xv = _prepared(monkeypatch, tmp_path / "t.npy", mapped=mapped, kind="vae")
        result = fit(cfg, xt, xv, progress=False)
        params.append(torch.cat([p.detach().reshape(-1) for p in result.model.state_dict().values()]))
    assert float((params[0] - params[1]).abs().max()) <= 1e-5


def test_mapped_npy_runs_end_to_end(monkeypatch, tmp_path, table):
    np.save(tmp_path / "t.npy", table)
    monkeypatch.setenv("LATENTSERVE_MAP_BYTES", "0")
    cfg = TrainConfig(kind="ae", name="big", data=str(tmp_path / "t.npy"), epochs=2,
                      models=str(tmp_path / "models"), runs=str(tmp_path / "runs"))  # fmt: skip
    result = pipeline.run(cfg, progress=False)
    assert (result.artifact / "manifest.json").is_file()
    # 900 rows: 135 calibration, then 612 training and 153 validation rows
    assert result.metrics["train_rows"] == 612 and result.metrics["val_rows"] == 153
    assert result.metrics["val_reconstruction_mse"] < result.metrics["mean_predictor_mse"] * 2


def test_streamed_csv_reads_the_in_memory_rows(monkeypatch, tmp_path, table):
    path = tmp_path / "t.csv"
    header = ";".join(f"f{j}" for j in range(table.shape[1]))
    np.savetxt(path, table, delimiter=";", header=header, comments="", fmt="%.6g")
    monkeypatch.setattr(sources, "CSV_CHUNK_ROWS", 100)  # several chunks
    monkeypatch.setenv("LATENTSERVE_MAP_BYTES", "0")
    streamed = sources.load(str(path))
    monkeypatch.setenv("LATENTSERVE_MAP_BYTES", str(2**40))
    in_memory = sources.load(str(path))
    assert isinstance(streamed.x, np.memmap) and not isinstance(in_memory.x, np.memmap)
    np.testing.assert_array_equal(np.asarray(streamed.x), in_memory.x)
    assert streamed.feature_names == in_memory.feature_names == header.split(";")


@pytest.mark.parametrize("filename", sorted(BAD_CSV))
def test_streamed_csv_refuses_what_the_in_memory_reader_refuses(monkeypatch, tmp_path, filename):
    text, needle = BAD_CSV[filename]
    path = tmp_path / filename
    path.write_text(text)
    monkeypatch.setenv("LATENTSERVE_MAP_BYTES", "0")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the CSV cache's folder
    with pytest.raises(DataError) as err:
        sources.load(str(path))
    assert needle in str(err.value)
    assert list((tmp_path / "tmp").rglob("*")) in ([], [tmp_path / "tmp" / "latentserve-csv"])  # no leftovers


def test_mapped_npy_reports_the_first_nan_like_the_in_memory_reader(monkeypatch, tmp_path, table):
    table[500, 7] = np.nan
    table[800, 1] = np.inf
    np.save(tmp_path / "t.npy", table)
    messages = []
    for limit in ("0", str(2**40)):
        monkeypatch.setenv("LATENTSERVE_MAP_BYTES", limit)
        with pytest.raises(DataError) as err:
            sources.load(str(tmp_path / "t.npy"))
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "2 NaN or infinite values, the first at row 501, column 8" in messages[0]
