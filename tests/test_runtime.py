"""The runtime without HTTP: NumPy in, NumPy out; loading, refusing, and both backends agreeing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from artifact.graphs import Backend
from artifact.predictor import as_matrix
from service.errors import InvalidInput, ModelFailed, ModelNotFound, NotSupported, StartupError
from service.repository import ModelRepository

PARITY = 1e-4


# ----- input checks -----------------------------------------------------------------------------
def test_as_matrix_names_the_row_with_the_wrong_width():
    with pytest.raises(InvalidInput, match="row 2 of inputs has 3 features, expected 4 features"):
        as_matrix([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3]], 4, "inputs", 10, "features")


def test_as_matrix_names_the_non_finite_cell():
    with pytest.raises(InvalidInput, match=r"inputs\[1\]\[0\] is not a finite float32 number"):
        as_matrix([[1.0, 2.0], [float("nan"), 0.0]], 2, "inputs", 10)


def test_as_matrix_rejects_values_beyond_float32():
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\[1\] .*1e\+39"):
        as_matrix([[1.0, 1e39]], 2, "inputs", 10)


def test_as_matrix_rejects_empty_inputs():
    with pytest.raises(InvalidInput, match="inputs is empty"):
        as_matrix([], 2, "inputs", 10)


def test_as_matrix_rejects_more_rows_than_the_limit():
    with pytest.raises(InvalidInput, match="11 rows, the limit is 10"):
        as_matrix(np.zeros((11, 2)), 2, "inputs", 10)


# ----- repository -------------------------------------------------------------------------------
def test_repository_defaults_to_the_newest_version(onnx_repository):
    assert onnx_repository.get("digits-ae").version == 2


def test_repository_serves_an_older_version_when_asked(onnx_repository):
    assert onnx_repository.get("digits-ae", 1).version == 1


def test_repository_unknown_name_lists_the_available_models(onnx_repository):
    with pytest.raises(ModelNotFound, match=r"no model named 'nope'; available: digits-ae \(versions 1, 2\)"):
        onnx_repository.get("nope")


def test_repository_unknown_version_lists_the_versions(onnx_repository):
    with pytest.raises(ModelNotFound, match="has no version 7; available versions: 1, 2"):
        onnx_repository.get("digits-ae", 7)


def test_repository_needs_a_name_when_several_models_are_loaded(onnx_repository):
    with pytest.raises(InvalidInput, match="several models are loaded"):
        onnx_repository.get(None)


def test_repository_name_is_optional_with_one_model(copy_model, load_repository, tmp_path):
    copy_model("digits-vae", tmp_path)
    assert load_repository(tmp_path).get(None).name == "digits-vae"


def test_repository_skips_folders_in_progress(copy_model, load_repository, tmp_path):
    copy_model("digits-vae", tmp_path)
    (tmp_path / "digits-vae" / "1").rename(tmp_path / "digits-vae" / ".tmp-123")
    copy_model("digits-vae", tmp_path)
    copy_model("digits-gan", tmp_path / ".hidden")
    repository = load_repository(tmp_path)
    assert list(repository.models) == ["digits-vae"] and list(repository.models["digits-vae"]) == [1]


def test_repository_is_not_ready_before_loading(models_dir):
    backend = Backend("onnx", "cpu")
    backend.check()
    assert "digits-ae version 2 is loading" in ModelRepository(models_dir, backend).problems()


# ----- refusing broken artifacts ----------------------------------------------------------------
@pytest.fixture
def refused(copy_model, load_repository, tmp_path):
    """refused(damage) -> a repository of digits-ae (damaged by damage(folder)) and an intact digits-vae."""

    def build(damage) -> ModelRepository:
        damage(copy_model("digits-ae", tmp_path))
        copy_model("digits-vae", tmp_path)
        return load_repository(tmp_path)

    return build


def test_runtime_refuses_a_tampered_graph_with_its_file_name(refused, tamper):
    repository = refused(lambda f: tamper(f / "decoder.onnx"))
    model = repository.models["digits-ae"][1]
    assert model.state == "failed"
    assert "decoder graph file decoder.onnx fails its sha256 check" in model.reason


def test_runtime_refuses_a_tampered_graph_of_the_other_format_too(refused, tamper):
    repository = refused(lambda f: tamper(f / "encoder.pt"))
    assert "encoder.pt fails its sha256 check" in repository.models["digits-ae"][1].reason


def test_repository_keeps_serving_the_intact_models_beside_a_refused_one(refused, tamper):
    repository = refused(lambda f: tamper(f / "decoder.onnx"))
    assert repository.get("digits-vae").state == "ready"


def test_repository_answers_a_refused_model_with_its_reason(refused, tamper):
    repository = refused(lambda f: tamper(f / "decoder.onnx"))
    with pytest.raises(ModelFailed, match="refused at load: decoder graph file decoder.onnx fails"):
        repository.get("digits-ae")


def test_runtime_refuses_an_invalid_manifest(refused):
    def damage(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["kind"] = "transformer"
        (folder / "manifest.json").write_text(json.dumps(manifest))

    repository = refused(damage)
    assert "manifest.json is invalid: kind" in repository.models["digits-ae"][1].reason


def test_runtime_refuses_a_manifest_in_another_models_folder(copy_model, load_repository, tmp_path):
    copy_model("digits-ae", tmp_path, as_name="other")
    reason = load_repository(tmp_path).models["other"][1].reason
    assert "describes digits-ae version 1, but sits in the folder of other version 1" in reason


def test_backend_refuses_cuda_it_does_not_have():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(StartupError, match="CUDAExecutionProvider"):
        Backend("onnx", "cuda").check()


# ----- what the models answer -------------------------------------------------------------------
def test_runtime_encode_returns_one_latent_row_per_input(onnx_repository, digits):
    out = onnx_repository.get("digits-ae").encode(digits[:5])
    assert out["latents"].shape == (5, 16)


def test_runtime_vae_encode_returns_mu_as_latents(onnx_repository, digits):
    out = onnx_repository.get("digits-vae").encode(digits[:5])
    assert np.array_equal(out["latents"], out["mu"]) and out["logvar"].shape == (5, 16)


def test_runtime_reconstruct_round_trips_training_rows_in_raw_units(onnx_repository, digits):
    x = digits[:200]
    error = np.sqrt(np.mean((onnx_repository.get("digits-ae").reconstruct(x) - x) ** 2))
    mean_row_error = np.sqrt(np.mean((x - x.mean(axis=0)) ** 2))  # about 4.3 pixel levels of 16
    assert error < 0.75 * mean_row_error


@pytest.mark.parametrize("name", ["digits-ae", "digits-vae", "digits-gan"])
def test_runtime_sample_is_reproducible_by_seed(onnx_repository, name):
    model = onnx_repository.get(name)
    assert np.array_equal(model.sample(4, seed=3), model.sample(4, seed=3))


def test_runtime_sample_changes_with_the_seed(onnx_repository):
    model = onnx_repository.get("digits-vae")
    assert not np.allclose(model.sample(4, seed=3), model.sample(4, seed=4))


def test_runtime_sample_at_temperature_zero_decodes_the_prior_mean(onnx_repository):
    samples = onnx_repository.get("digits-gan").sample(3, seed=1, temperature=0.0)
    assert np.allclose(samples, samples[0])


def test_runtime_sample_decodes_given_latents(onnx_repository):
    model = onnx_repository.get("digits-ae")
    z = model.draw_latents(3, seed=5)
    assert np.array_equal(model.sample(latents=z), model.sample(3, seed=5))


def test_runtime_sample_rejects_latents_of_the_wrong_width(onnx_repository):
    with pytest.raises(InvalidInput, match="row 0 of latents has 3 values, expected 16 values"):
        onnx_repository.get("digits-vae").sample(latents=[[0.0, 0.0, 0.0]])


def test_runtime_sample_output_is_in_raw_units(onnx_repository):
    assert onnx_repository.get("digits-vae").sample(50, seed=0).max() > 1.5  # pixels go to 16, not 1


def test_runtime_anomaly_score_ranks_noise_above_digits(onnx_repository, digits):
    noise = np.random.default_rng(0).uniform(0, 16, (100, 64))
    for name in ("digits-ae", "digits-rae", "digits-vae", "digits-gan"):
        model = onnx_repository.get(name)
        assert model.anomaly_score(noise).scores.mean() > model.anomaly_score(digits[:100]).scores.mean(), name


def test_runtime_anomaly_flags_follow_the_threshold(onnx_repository, digits):
    result = onnx_repository.get("digits-rae").anomaly_score(digits[:300])
    assert np.array_equal(result.is_anomaly, result.scores > result.threshold)


def test_runtime_anomaly_explain_contributions_sum_to_ae_scores(onnx_repository, digits):
    result = onnx_repository.get("digits-ae").anomaly_score(digits[:5], explain=True)
    assert np.allclose(result.contributions.sum(axis=1), result.scores, rtol=1e-5)


def test_runtime_gan_explain_contributions_sum_to_latent_search_scores(onnx_repository, digits):
    model = onnx_repository.get("digits-gan")
    assert model.manifest.calibration.method == "gan-latent-search"
    result = model.anomaly_score(digits[:5], explain=True)
    assert np.allclose(result.contributions.sum(axis=1), result.scores, rtol=1e-5)


def test_runtime_discriminator_scored_gan_explain_is_not_supported(copy_model, load_repository, tmp_path, digits):
    folder = copy_model("digits-gan", tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["calibration"]["method"] = "neg-log-discriminator"  # an artifact scored by −log D(x)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model = load_repository(tmp_path).get("digits-gan")
    assert model.anomaly_score(digits[:2]).scores.shape == (2,)
    with pytest.raises(NotSupported, match="is a gan scored by its discriminator"):
        model.anomaly_score(digits[:2], explain=True)


def test_runtime_gan_encode_is_not_supported(onnx_repository, digits):
    with pytest.raises(NotSupported, match="supports sample, anomaly-score; not encode"):
        onnx_repository.get("digits-gan").encode(digits[:2])


# ----- ONNX Runtime and TorchScript agree -------------------------------------------------------
def _answers(model, x: np.ndarray) -> dict[str, np.ndarray]:
    caps, out = model.manifest.capabilities, {}
    if "encode" in caps:
        out.update({f"encode.{k}": v for k, v in model.encode(x).items()})
        out["reconstruct"] = model.reconstruct(x)
    out["sample"] = model.sample(16, seed=11, temperature=0.8)
    scores = model.anomaly_score(x, explain=True)
    out.update({"scores": scores.scores, "percentiles": scores.percentiles})
    if scores.contributions is not None:
        out["contributions"] = scores.contributions
    return out


@pytest.mark.parametrize("name", ["digits-ae", "digits-rae", "digits-vae", "digits-gan"])
def test_backends_agree_on_every_endpoint(onnx_repository, torchscript_repository, digits, name):
    x = digits[:64]
    onnx, script = _answers(onnx_repository.get(name), x), _answers(torchscript_repository.get(name), x)
    assert onnx.keys() == script.keys()
    for key in onnx:
        # A percentile is the score pushed through the calibration CDF, whose slope amplifies
        # score differences: compare it as a fraction (0-1), the scale the tolerance is meant for.
        scale = 100.0 if key == "percentiles" else 1.0
        assert np.max(np.abs(onnx[key] - script[key])) / scale <= PARITY, key
