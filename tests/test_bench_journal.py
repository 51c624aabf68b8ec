"""bench/anomaly.py's journal reuse: baselines are reused from any run, our kinds only under the same
overrides (a run with `--set scaling=robust` must not pick up the defaults' cells)."""

import json

from bench.anomaly import read_journal


def test_our_cells_are_reused_only_under_the_same_overrides(tmp_path):
    journal = tmp_path / "cells.jsonl"
    rows = [
        {"set": "wine", "detector": "iforest", "seed": 0, "auc": 0.8, "ap": 0.3, "seconds": 0.1},
        {"set": "wine", "detector": "ae", "seed": 0, "auc": 0.4, "ap": 0.1, "seconds": 1.0},  # an old line: {}
        {
            "set": "wine",
            "detector": "vae",
            "seed": 0,
            "auc": 0.9,
            "ap": 0.4,
            "seconds": 1.0,
            "overrides": {"ensemble": 3},
        },
    ]
    journal.write_text("".join(json.dumps(r) + "\n" for r in rows))

    plain = read_journal([journal])
    assert set(plain) == {("wine", "iforest"), ("wine", "ae")}
    robust = read_journal([journal], {"scaling": "robust"})
    assert set(robust) == {("wine", "iforest")}
    ens = read_journal([journal], {"ensemble": 3})
    assert set(ens) == {("wine", "iforest"), ("wine", "vae")}
    assert ens["wine", "vae"].aucs == [0.9] and ens["wine", "vae"].seeds == [0]
