"""Images and real-world tables as training data (issue 15): image arrays, pixel scaling, --columns."""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from training import images
from training.cli import main
from training.config import TrainConfig


def _train(tmp_path: Path, *args: str) -> int:
    return main(["train", *args, "--models", str(tmp_path / "models"), "--runs", str(tmp_path / "runs"), "--quiet"])


def _manifest(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "models" / name / "1" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def digit_images() -> np.ndarray:
    return load_digits().images  # (1797, 8, 8) float64, whole numbers 0..16


def test_uint8_image_array_trains_as_pixels_without_allow_constant(tmp_path, digit_images):
    path = tmp_path / "images.npy"
    np.save(path, (digit_images * 15).astype(np.uint8))  # 0..240 with constant zero borders
    assert _train(tmp_path, "vae", "--data", str(path), "--name", "img", "--epochs", "2") == 0
    m = _manifest(tmp_path, "img")
    assert m["image_shape"] == [8, 8]
    assert m["preprocessing"]["method"] == "image-range"
    assert set(m["preprocessing"]["scale"]) == {255.0} and set(m["preprocessing"]["offset"]) == {0.0}
    assert m["likelihood"] == "bernoulli"
    run = next((tmp_path / "runs").iterdir())
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()


def test_ae_on_pixels_uses_bce_and_few_level_images_their_own_range(tmp_path, digit_images):
    path = tmp_path / "digits.npz"
    np.savez(path, X=digit_images)  # (N, 8, 8) floats holding whole numbers 0..16: 17 levels
    assert _train(tmp_path, "ae", "--data", str(path), "--name", "a", "--epochs", "1") == 0
    m = _manifest(tmp_path, "a")
    assert m["likelihood"] == "bce" and m["training"]["reconstruction"] == "bce"
    assert m["image_shape"] == [8, 8] and set(m["preprocessing"]["scale"]) == {16.0}
    assert m["calibration"]["method"] == "reconstruction-bce"


def test_float_images_outside_unit_range_are_not_pixels(tmp_path, digit_images):
    path = tmp_path / "centred.npy"
    np.save(path, ((digit_images - 8.0) / 4.0).astype(np.float32))  # in [-2, 2]: not pixels
    assert _train(tmp_path, "vae", "--data", str(path), "--name", "c", "--epochs", "1") == 0
    m = _manifest(tmp_path, "c")
    assert m["image_shape"] == [8, 8]  # still images, for the grids
    assert m["preprocessing"]["method"] == "standardize" and m["likelihood"] == "gaussian"


def test_flat_rows_with_image_shape_and_the_hint_without(tmp_path, capsys, digit_images):
    flat = (digit_images.reshape(-1, 64) / 16).astype(np.float32)
    path = tmp_path / "flat.csv"  # a table file: never taken for images, but the error says how
    np.savetxt(path, flat, delimiter=",", fmt="%.4f")
    assert _train(tmp_path, "gan", "--data", str(path), "--name", "g", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "is constant" in err and "--image-shape 8,8" in err, err
    assert _train(tmp_path, "gan", "--data", str(path), "--name", "g", "--epochs", "1", "--image-shape", "8,8") == 0
    m = _manifest(tmp_path, "g")
    assert m["image_shape"] == [8, 8] and set(m["preprocessing"]["scale"]) == {1.0}
    assert _train(tmp_path, "gan", "--data", str(path), "--name", "h", "--image-shape", "8,7") == 2
    assert "holds 56 pixels, but the rows have 64 values" in capsys.readouterr().err


def test_flat_pixel_rows_with_constant_borders_are_taken_for_square_images(tmp_path, caplog, digit_images):
    """(N, 64) floats in [0, 1] with constant border columns, no flag: 8x8 images (issue 15's new
    user with an (N, 784) .npz); --allow-constant keeps them a table; the same rows centred are a table."""
    flat = (digit_images.reshape(-1, 64) / 16).astype(np.float32)
    path = tmp_path / "my_images.npz"
    np.savez(path, x=flat)
    with caplog.at_level("WARNING", logger="training.data"):
        assert _train(tmp_path, "vae", "--data", str(path), "--name", "v", "--epochs", "1") == 0
    assert "taken for 8x8 images" in caplog.text and "--allow-constant" in caplog.text
    m = _manifest(tmp_path, "v")
    assert m["image_shape"] == [8, 8] and m["preprocessing"]["method"] == "image-range"
    assert m["likelihood"] == "bernoulli"
    assert _train(tmp_path, "vae", "--data", str(path), "--name", "t", "--epochs", "1", "--allow-constant") == 0
    t = _manifest(tmp_path, "t")
    assert t["image_shape"] is None and t["preprocessing"]["method"] == "standardize"
    centred = tmp_path / "centred.npy"
    np.save(centred, flat - 0.5)  # negative values: not pixels, so the constant columns are an error
    assert _train(tmp_path, "vae", "--data", str(centred), "--name", "c", "--epochs", "1") == 2


@pytest.mark.parametrize(
    ("shape", "constant", "expected"),
    [((10, 784), True, (28, 28)), ((10, 784), False, None), ((10, 49), True, None), ((10, 80), True, None)],
)
def test_inferred_image_shape(shape, constant, expected):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    if constant:
        x[:, 0] = 0.0
    assert images.inferred_image_shape(x) == expected


def test_image_rows_layouts():
    x = np.zeros((5, 3, 4, 6), np.uint8)
    rows, shape = images.image_rows(x, None, "s")
    assert rows.shape == (5, 72) and shape == (3, 4, 6)
    assert images.channels_last(shape) == (1, 2, 0)
    assert images.image_rows(np.zeros((5, 4, 6, 3)), None, "s")[1] == (4, 6, 3)
    assert images.channels_last((4, 6, 3)) == (0, 1, 2)
    with pytest.raises(images.ImageShapeError, match="must be"):
        images.image_rows(np.zeros((5, 5, 6, 7)), None, "s")
    with pytest.raises(ValueError, match="channels"):
        images.parse_image_shape("8,8,2")
    assert images.parse_image_shape("32,32,3") == (32, 32, 3)


@pytest.mark.parametrize(
    ("values", "integer", "expected"),
    [
        (np.array([0, 3, 255]), True, (0.0, 255.0)),
        (np.array([0.0, 0.5, 1.0]), False, (0.0, 1.0)),
        (np.array([0.0, 1.0]), True, (0.0, 1.0)),  # binary masks
        (np.array([0.0, 7.0, 16.0]), False, (0.0, 16.0)),  # few whole-number levels: their own range
        (np.array([0.0, 40.0, 200.0]), False, (0.0, 255.0)),  # whole numbers past 16: 8-bit
        (np.array([-0.5, 0.5]), False, None),
        (np.array([0.0, 1.5]), False, None),  # a float past 1 that is not a whole number
        (np.array([0, 300]), True, None),
    ],
)
def test_pixel_range(values, integer, expected):
    assert images.pixel_range(values, integer) == expected


WINE_HEADER = "sample_id," + ",".join(f"m{i}" for i in range(1, 14)) + ",cultivar"


@pytest.fixture
def wine_csv(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    lines = [WINE_HEADER]
    for i in range(300):
        values = ",".join(f"{v:.4f}" for v in rng.normal(size=13))
        lines.append(f"S{i:04d},{values},{['barolo', 'grignolino', 'barbera'][i % 3]}")
    path = tmp_path / "wine.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_non_numeric_columns_error_suggests_drop_columns(tmp_path, capsys, wine_csv):
    assert _train(tmp_path, "ae", "--data", str(wine_csv), "--name", "w") == 2
    err = capsys.readouterr().err.strip()
    assert "column 1 ('sample_id') is not numeric: line 2 holds 'S0000'" in err, err
    assert "column 15 ('cultivar')" in err
    assert "--drop-columns sample_id,cultivar" in err and "--columns" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "models").exists()


def test_drop_columns_by_name_keeps_feature_names_in_order(tmp_path, wine_csv):
    args = ["--data", str(wine_csv), "--epochs", "1", "--drop-columns", "sample_id,cultivar"]
    assert _train(tmp_path, "ae", *args, "--name", "w") == 0
    m = _manifest(tmp_path, "w")
    assert m["feature_names"] == [f"m{i}" for i in range(1, 14)] and m["n_features"] == 13
    assert m["training"]["drop_columns"] == ["sample_id", "cultivar"]


def test_columns_by_position_and_name_in_file_order(tmp_path, wine_csv):
    assert _train(tmp_path, "ae", "--data", str(wine_csv), "--epochs", "1", "--columns", "m5,3,2", "--name", "p") == 0
    assert _manifest(tmp_path, "p")["feature_names"] == ["m1", "m2", "m5"]


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--columns", "m1,colour", "--columns names 'colour', which is not a column of the file"),
        ("--drop-columns", "0", "positions count from 1 to 15"),
        ("--columns", "m1,m1", "names a column twice"),
        ("--columns", "m1,cultivar", "column 15 ('cultivar') is not numeric"),
    ],
)
def test_column_choices_that_cannot_work(tmp_path, capsys, wine_csv, flag, value, needle):
    assert _train(tmp_path, "ae", "--data", str(wine_csv), flag, value, "--name", "x") == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "models").exists()


def test_columns_on_a_numpy_table_by_position(tmp_path):
    x = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float32)
    x[:, 0] = np.arange(300)  # an id column
    np.save(tmp_path / "t.npy", x)
    assert (
        _train(tmp_path, "ae", "--data", str(tmp_path / "t.npy"), "--drop-columns", "1", "--epochs", "1", "--name", "n")
        == 0
    )
    m = _manifest(tmp_path, "n")
    assert m["n_features"] == 4 and m["feature_names"] is None


def test_a_table_under_two_batches_trains_with_a_smaller_default_batch(tmp_path):
    np.save(tmp_path / "tiny.npy", np.random.default_rng(2).normal(size=(80, 6)).astype(np.float32))
    assert _train(tmp_path, "vae", "--data", str(tmp_path / "tiny.npy"), "--epochs", "2", "--name", "t") == 0
    # 80 rows: 12 calibration, 14 validation, 54 training rows: half of them
    assert _manifest(tmp_path, "t")["training"]["batch_size"] == 27


@pytest.mark.parametrize(("world", "expected"), [(1, 27), (2, 26), (4, 24), (64, 64)])
def test_the_small_table_default_batch_splits_evenly_among_torchrun_ranks(world, expected):
    """The default batch (half of 54 training rows) is rounded down to a multiple of the ranks."""
    cfg = TrainConfig(kind="vae", name="t").resolve(6, False, 54, world=world)
    assert cfg.batch_size == expected and cfg.batch_size % world == 0


def test_an_explicit_batch_is_kept_whatever_the_ranks():
    assert TrainConfig(kind="vae", name="t", batch_size=27).resolve(6, False, 54, world=2).batch_size == 27
