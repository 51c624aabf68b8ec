"""`latentserve train` / `export` on the command line: bad input is one line, exit 2, nothing written."""

import subprocess
import sys

import numpy as np
import pytest

from training.cli import main

BAD_CSV = {
    "empty.csv": ("", "empty"),
    "header_only.csv": ("a,b,c\n", "no data rows"),
    "text_column.csv": ("a,b,colour\n1,2,red\n3,4,blue\n", "column 3 ('colour') is not numeric"),
    "nan.csv": ("1,2\n3,nan\n" + "1,2\n" * 100, "NaN or infinite values, the first at row 2"),
    "inf.csv": ("1,2\n" * 100 + "inf,2\n", "NaN or infinite"),
    "ragged.csv": ("1,2\n3\n", "line 2 has 1 columns, expected 2"),
}


def _train(tmp_path, *args):
    return main(["train", *args, "--models", str(tmp_path / "models"), "--runs", str(tmp_path / "runs"), "--quiet"])


def _assert_refused(tmp_path, capsys, code, needle):
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("filename", sorted(BAD_CSV))
def test_cli_train_refuses_bad_csv(tmp_path, capsys, filename):
    text, needle = BAD_CSV[filename]
    path = tmp_path / filename
    path.write_text(text)
    code = _train(tmp_path, "ae", "--data", str(path), "--name", "x")
    _assert_refused(tmp_path, capsys, code, needle)


def test_cli_train_refuses_unknown_kind(tmp_path, capsys):
    _assert_refused(tmp_path, capsys, _train(tmp_path, "pca", "--name", "x"), "unknown kind 'pca'")


def test_cli_train_refuses_missing_file(tmp_path, capsys):
    code = _train(tmp_path, "ae", "--data", str(tmp_path / "nope.csv"), "--name", "x")
    _assert_refused(tmp_path, capsys, code, "does not exist")


def test_cli_train_refuses_unreadable_npy(tmp_path, capsys):
    path = tmp_path / "garbage.npy"
    path.write_bytes(b"this is not a numpy file")
    code = _train(tmp_path, "ae", "--data", str(path), "--name", "x")
    _assert_refused(tmp_path, capsys, code, "cannot read")


def test_cli_train_refuses_unsupported_suffix(tmp_path, capsys):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    _assert_refused(tmp_path, capsys, _train(tmp_path, "ae", "--data", str(path), "--name", "x"), "unsupported")


def test_cli_train_refuses_constant_column(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    x[:, 2] = 5.0
    np.save(tmp_path / "const.npy", x)
    code = _train(tmp_path, "ae", "--data", str(tmp_path / "const.npy"), "--name", "x")
    _assert_refused(tmp_path, capsys, code, "column 3 is constant")


def test_cli_train_refuses_fewer_rows_than_a_batch(tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.random.default_rng(0).normal(size=(40, 4)))
    # the default batch size fits small tables (half the training rows); an explicit one is kept
    code = _train(tmp_path, "ae", "--data", str(tmp_path / "small.npy"), "--name", "x", "--batch-size", "64")
    _assert_refused(tmp_path, capsys, code, "fewer than one batch of 64")


def test_cli_train_refuses_bce_outside_unit_range(tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).normal(size=(300, 4)) * 10)
    code = _train(
        tmp_path,
        "ae",
        "--data",
        str(tmp_path / "wide.npy"),
        "--name",
        "x",
        "--reconstruction",
        "bce",
        "--scaling",
        "none",
    )
    _assert_refused(tmp_path, capsys, code, "need data in [0, 1]")


def test_cli_train_refuses_npz_with_several_arrays(tmp_path, capsys):
    np.savez(tmp_path / "two.npz", a=np.ones((100, 2)), b=np.ones((100, 2)))
    code = _train(tmp_path, "ae", "--data", str(tmp_path / "two.npz"), "--name", "x")
    _assert_refused(tmp_path, capsys, code, "expected one named 'X'")


def test_cli_train_refuses_invalid_name(tmp_path, capsys):
    _assert_refused(tmp_path, capsys, _train(tmp_path, "ae", "--name", "../escape"), "--name")


def test_cli_train_refuses_bad_option_value(tmp_path, capsys):
    code = _train(tmp_path, "ae", "--name", "x", "--contamination", "0.7")
    _assert_refused(tmp_path, capsys, code, "--contamination must be in (0, 0.5)")


def test_cli_train_refuses_unknown_option(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.cli",
            "train",
            "ae",
            "--name",
            "x",
            "--models",
            str(tmp_path / "m"),
            "--colour",
            "blue",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unrecognized arguments: --colour blue" in proc.stderr
    assert not (tmp_path / "m").exists()


def test_cli_train_npz_with_x_array_trains(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=x, y=np.zeros(300))
    code = _train(tmp_path, "vae", "--data", str(tmp_path / "d.npz"), "--name", "npz", "--epochs", "2")
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "models" / "npz" / "1" / "manifest.json").is_file()


def test_cli_export_republishes_checkpoint(tmp_path, capsys):
    assert _train(tmp_path, "gan", "--name", "g", "--epochs", "1") == 0
    ckpt = next((tmp_path / "runs").glob("g-*/checkpoint.pt"))
    code = main(["export", str(ckpt), "--models", str(tmp_path / "models"), "--name", "g2"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "models" / "g2" / "1" / "manifest.json").is_file()


def test_cli_export_refuses_non_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    code = main(["export", str(bogus), "--models", str(tmp_path / "models")])
    _assert_refused(tmp_path, capsys, code, "cannot read checkpoint")


@pytest.mark.parametrize("sep", [";", "\t"])
def test_cli_train_reads_semicolon_and_tab_csv(tmp_path, capsys, sep):
    x = np.random.default_rng(0).normal(size=(120, 3))
    path = tmp_path / "d.csv"
    path.write_text(sep.join("abc") + "\n" + "\n".join(sep.join(f"{v:.4f}" for v in row) for row in x))
    code = _train(tmp_path, "ae", "--data", str(path), "--name", "sep", "--epochs", "1")
    assert code == 0, capsys.readouterr().err
    manifest = (tmp_path / "models" / "sep" / "1" / "manifest.json").read_text()
    assert '"feature_names": [\n    "a",\n    "b",\n    "c"\n  ]' in manifest
