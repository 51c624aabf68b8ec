"""Distributed training (issue 12): two gloo ranks on loopback train what one process trains, and
`latentserve train` under torchrun publishes exactly one version, refuses an uneven global batch and
publishes nothing when a rank dies. Marked `distributed`: about 3 minutes on the shared 2-core box."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.distributed_worker import CASES, DTYPES, MAPPED_CASES

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TORCHRUN = [PYTHON, "-m", "torch.distributed.run"]  # the `torchrun` script, from this interpreter
TOLERANCE = {"float32": 1e-6, "float64": 1e-10}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def parity(tmp_path_factory) -> dict[str, dict[str, np.lib.npyio.NpzFile]]:
    """Every case trained by one process and by two ranks (tests/distributed_worker.py)."""
    tables = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(5)
    table = (rng.normal(size=(1001, 12)) @ rng.normal(size=(12, 12)) * 4 + 9).astype(np.float32)
    table[:40] *= 6  # a few outliers, for the trimmed cost
    np.save(tables / "table.npy", table)
    np.savetxt(tables / "table.csv", table, delimiter=",", fmt="%.9g")
    out = {}
    for world in (1, 2):
        folder = tmp_path_factory.mktemp(f"world{world}")
        port = str(_free_port())
        procs = [
            subprocess.Popen(
                [PYTHON, str(ROOT / "tests" / "distributed_worker.py"), str(folder), str(tables)],
                env=_env(
                    WORLD_SIZE=str(world), RANK=str(r), LOCAL_RANK=str(r), MASTER_PORT=port, LATENTSERVE_MAP_BYTES="0"
                ),
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in range(world)
        ]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
        out[world] = {r: np.load(folder / f"rank{r}.npz") for r in range(world)}
    return out


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_train_the_single_process_parameters(parity, case, dtype):
    single, rank0 = parity[1][0][f"{case}/{dtype}/params"], parity[2][0][f"{case}/{dtype}/params"]
    assert single.shape == rank0.shape
    diff = float(np.max(np.abs(single - rank0)))
    assert diff <= TOLERANCE[dtype], f"{case} {dtype}: max |Δθ| = {diff:.3g} > {TOLERANCE[dtype]}"
    assert float(np.max(np.abs(single))) > 0.01  # a real model, not zeros on both sides


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_agree_on_history_and_best_epoch(parity, case):
    key = f"{case}/float64"
    h0, h1 = (json.loads(str(parity[2][r][f"{key}/history"])) for r in (0, 1))
    assert h0 == h1  # bit-identical logs and validation on both ranks
    assert int(parity[2][1][f"{key}/best_epoch"]) == int(parity[2][0][f"{key}/best_epoch"])
    np.testing.assert_array_equal(parity[2][0][f"{key}/params"], parity[2][1][f"{key}/params"])
    single = json.loads(str(parity[1][0][f"{key}/history"]))
    assert len(single) == len(h0) == 2
    for a, b in zip(single, h0):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), (case, k)


@pytest.mark.parametrize("case", sorted(MAPPED_CASES))
def test_two_ranks_on_mapped_files_match_one_process(parity, case):
    """The large-data path: sharded checks, scaling statistics, σ and latent prior, then training."""
    single, ranks = parity[1][0], parity[2]
    for r in (0, 1):
        # scale·σ after the fold: σ comes from the trained model, so float32-training close, not exact
        np.testing.assert_allclose(ranks[r][f"{case}/scaling"], single[f"{case}/scaling"], rtol=1e-6)
        np.testing.assert_allclose(ranks[r][f"{case}/stats"], single[f"{case}/stats"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ranks[r][f"{case}/prior"], single[f"{case}/prior"], rtol=1e-6, atol=1e-7)
        diff = float(np.max(np.abs(ranks[r][f"{case}/params"] - single[f"{case}/params"])))
        assert diff <= 1e-6, f"{case} rank {r}: max |Δθ| = {diff:.3g}"
    if case.startswith("npy-ae"):
        assert len(single[f"{case}/prior"]) > 0  # the ae's latent prior was fitted


# ---- the command line under torchrun --------------------------------------------------------------


def _train_args(models: Path, runs: Path, *extra: str) -> list[str]:
    return ["train", "ae", "--name", "dd", "--models", str(models), "--runs", str(runs), "--quiet", *extra]


def _torchrun(tmp_path: Path, *extra: str, nproc: int = 2, **popen) -> subprocess.Popen:
    cmd = [*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", "training.cli"]
    cmd += _train_args(tmp_path / "models", tmp_path / "runs", *extra)
    return subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _versions(models: Path) -> list[Path]:
    return sorted(p for p in (models / "dd").glob("*") if p.is_dir()) if (models / "dd").exists() else []


def test_torchrun_cli_publishes_one_version_like_one_process(tmp_path, load_repository):
    from training.cli import main

    proc = _torchrun(tmp_path, "--epochs", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert out.count("exported ") == 1, out  # rank 0 alone reports (and publishes)
    assert "global batch 64 = 32 rows per rank" in err
    versions = _versions(tmp_path / "models")
    assert [v.name for v in versions] == ["1"], versions
    assert len(list((tmp_path / "runs").iterdir())) == 1

    repository = load_repository(tmp_path / "models")
    model = repository.get("dd", 1)
    assert model.manifest.kind == "ae"

    single = tmp_path / "single"
    assert main(_train_args(single / "models", single / "runs", "--epochs", "2")) == 0
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    x = (load_digits().data[:300] / 16.0).astype(np.float32)  # model space of the image range
    for graph, feed in (("encoder.onnx", x), ("decoder.onnx", None)):
        outs = []
        for root in (tmp_path / "models", single / "models"):
            session = ort.InferenceSession(str(root / "dd" / "1" / graph), providers=["CPUExecutionProvider"])
            inputs = feed if feed is not None else np.random.default_rng(0).standard_normal((300, 16), np.float32)
            outs.append(session.run(None, {session.get_inputs()[0].name: inputs})[0])
        diff = float(np.max(np.abs(outs[0] - outs[1])))
        assert diff <= 1e-5, f"{graph}: max |Δ| = {diff:.3g} between 2-process and 1-process export"


def test_uneven_global_batch_is_refused_before_any_rank_waits(tmp_path):
    code = (
        "import sys; from training.cli import main; "
        f"sys.exit(main({_train_args(tmp_path / 'models', tmp_path / 'runs', '--batch-size', '63')!r}))"
    )
    env = _env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_PORT=str(_free_port()))
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "--batch-size 63 is the global batch" in lines[0], proc.stderr
    assert "multiple of 2, such as 62" in lines[0]
    assert not (tmp_path / "models").exists()


def test_torchrun_uneven_global_batch_exits_2_on_every_rank_with_one_message(tmp_path):
    proc = _torchrun(tmp_path, "--batch-size", "63")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("latentserve train: error:")]
    assert len(ours) == 1 and "--batch-size 63" in ours[0], err[-3000:]  # rank 0 speaks, rank 1 is quiet
    # torchrun's report: rank 0 exited 2; rank 1 exits 2 too, unless torchrun's SIGTERM reaches it first
    assert err.count("exitcode  : 2") >= 1 and "exitcode  : 1" not in err, err[-3000:]
    assert not (tmp_path / "models").exists()


def test_killed_rank_fails_the_run_and_publishes_nothing(tmp_path):
    proc = _torchrun(tmp_path, "--epochs", "400")  # minutes of training: killed well before the end
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("rows per rank" in line for line in lines):  # logged as the training loop starts
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(_find_rank(proc.pid, "1"), signal.SIGKILL)
        proc.wait(timeout=300)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines)
    assert proc.returncode != 0, err[-3000:]
    assert "Signals.SIGKILL" in err or "exitcode  : -9" in err, err[-3000:]  # torchrun saw the killed rank
    assert _versions(tmp_path / "models") == []
    leftovers = list((tmp_path / "models").rglob(".tmp-*")) if (tmp_path / "models").exists() else []
    assert leftovers == []


def _find_rank(parent: int, rank: str) -> int:
    """The pid of torchrun's worker process with RANK=rank."""
    for pid in _descendants(parent):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker with RANK={rank} under pid {parent}")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out += [int(c) for c in children]
        todo += [int(c) for c in children]
    return out
