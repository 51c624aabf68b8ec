"""bench/anomaly.py's journal reuse: baselines are reused from any run, our kinds only under the same
overrides (a run with `--set scaling=robust` must not pick up the defaults' cells); `--jobs 2` gives
the cells one process gives."""

import json

from bench.anomaly import read_journal, run


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


def test_two_worker_processes_give_the_cells_and_journal_of_one(tmp_path):
    """IsolationForest on two small sets of ../shared/data, two seeds: the same AUCs, APs and journal
    lines either way (only the order of the journal's lines may differ)."""
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    quiet = lambda line: None  # noqa: E731
    a = run(["glass", "wine"], ["iforest"], 2, quiet, journal=one, jobs=1)
    b = run(["glass", "wine"], ["iforest"], 2, quiet, journal=two, jobs=2)
    assert set(a) == set(b) == {("glass", "iforest"), ("wine", "iforest")}
    for key in a:
        by_seed = lambda cell: sorted(zip(cell.seeds, cell.aucs, cell.aps))  # noqa: E731
        assert by_seed(a[key]) == by_seed(b[key])
        assert a[key].roc is not None and b[key].roc is not None

    def lines(path):
        return sorted(
            json.dumps({k: v for k, v in json.loads(x).items() if k != "seconds"})
            for x in path.read_text().splitlines()
        )

    assert lines(one) == lines(two) and len(lines(one)) == 4


def test_split_seed_holds_the_split_and_varies_only_the_detectors_seed():
    """`--split-seed`: every seed sees the same test rows; without it each seed has its own split."""
    from bench.anomaly import _cell

    fixed = [_cell("glass", seed, "iforest", None, None, split_seed=7) for seed in (0, 1)]
    own = [_cell("glass", seed, "iforest", None, None) for seed in (0, 1)]
    assert (fixed[0][0] == fixed[1][0]).all()  # the same test labels, row for row
    assert not (fixed[0][1] == fixed[1][1]).all()  # IsolationForest's seed still moves its scores
    assert len(own[0][0]) == len(own[1][0]) and not (own[0][1] == own[1][1]).all()
