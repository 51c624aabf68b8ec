"""`latentserve evaluate` end to end on the session's digits models and a small tabular model: the files,
the self-contained HTML, the report's numbers against an independent computation, and the refusals."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from artifact.graphs import Backend
from artifact.predictor import Predictor
from latentserve.cli import main as latentserve
from training.evaluate import evaluate

PNG = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Every tag and attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]


def _served_scores(folder: Path, x: np.ndarray):
    """The scores the service answers, from its own runtime (not training/predictor.py)."""
    backend = Backend("onnx", "cpu", threads=1)
    backend.check()
    runtime = Predictor(folder, backend)
    runtime.load()
    assert runtime.state == "ready", runtime.reason
    return runtime.anomaly_score(x)


@pytest.fixture(scope="module")
def labelled_digits(tmp_path_factory, digits) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CSV of the digits plus 80 digits with a 3×3 block painted black, labelled in column 'anomaly'."""
    rng = np.random.default_rng(0)
    bad = digits[rng.choice(len(digits), 80, replace=False)].copy()
    for row in bad:
        i, j = rng.integers(0, 6, 2)
        row.reshape(8, 8)[i : i + 3, j : j + 3] = 16
    order = rng.permutation(len(digits) + 80)
    x = np.vstack([digits, bad])[order]
    y = np.r_[np.zeros(len(digits)), np.ones(80)][order]
    path = tmp_path_factory.mktemp("data") / "digits_labelled.csv"
    header = ",".join([f"p{k}" for k in range(64)] + ["anomaly"])
    np.savetxt(path, np.c_[x, y], delimiter=",", header=header, comments="", fmt="%g")
    return path, x, y.astype(int)


@pytest.fixture(scope="module")
def ae_report(models_dir, labelled_digits, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("eval-ae")
    return evaluate(models_dir / "digits-ae" / "1", str(labelled_digits[0]), "anomaly", out, n_boot=200)


@pytest.fixture(scope="module")
def vae_report(models_dir, tmp_path_factory) -> tuple[Path, dict]:
    return evaluate(models_dir / "digits-vae" / "1", "digits", None, tmp_path_factory.mktemp("eval-vae"), 16)


def test_evaluate_writes_every_file_it_references(ae_report) -> None:
    out, metrics = ae_report
    assert json.loads((out / "metrics.json").read_text())["model"]["name"] == "digits-ae"
    md = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "roc_pr.png" in figures and "reconstructions.png" in figures and "latent_pca.png" in figures
    for file in figures:
        assert (out / file).read_bytes().startswith(PNG), file


def test_evaluate_html_inlines_every_image_and_links_nowhere(ae_report) -> None:
    out, _ = ae_report
    page = _Page()
    text = (out / "report.html").read_text()
    page.feed(text)
    images = [v for tag, k, v in page.attrs if tag == "img" and k == "src"]
    n_figures = len(re.findall(r"!\[", (out / "report.md").read_text()))
    assert len(images) == n_figures >= 5
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert not [v for _, k, v in page.attrs if k in ("href", "src", "action") and not v.startswith("data:")]
    assert not re.search(r"https?://|url\(", text)


def _chromium() -> str | None:
    """The system's Chromium (apt), or Playwright's own download, for the browser test."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser  # needs chromium: runs with the browser tests (make test's second pytest process)
def test_evaluate_html_opens_in_a_headless_browser_without_a_request(ae_report) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser check needs playwright")
    out, _ = ae_report
    requests: list[str] = []

    def visit() -> tuple[list[bool], list[str]]:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium())
            context = browser.new_context(offline=True)
            page = context.new_page()

            def record(route) -> None:  # every request but the page itself is recorded and refused
                if route.request.url != (out / "report.html").as_uri():
                    requests.append(route.request.url)
                    return route.abort()
                return route.continue_()

            page.route("**/*", record)
            page.goto((out / "report.html").as_uri())
            loaded = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
            headings = page.locator("h2").all_inner_texts()
            browser.close()
        return loaded, headings

    # In a thread of its own: pytest-playwright's sync API keeps an event loop running in the main thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        loaded, headings = pool.submit(visit).result(timeout=120)
    assert requests == []
    assert len(loaded) >= 5 and all(loaded)
    assert "Anomaly detection" in headings and "Threshold check" in headings


def test_evaluate_auc_ap_f1_match_sklearn_on_the_served_scores(models_dir, ae_report, labelled_digits) -> None:
    out, metrics = ae_report
    _, x, y = labelled_digits
    served = _served_scores(models_dir / "digits-ae" / "1", x)
    got = metrics["anomaly_detection"]
    auc = skm.roc_auc_score(y, served.scores)
    assert 0.6 < auc < 0.999  # a real test: neither chance nor perfect
    assert got["roc_auc"] == pytest.approx(auc, abs=1e-9)
    assert got["average_precision"] == pytest.approx(skm.average_precision_score(y, served.scores), abs=1e-9)
    assert got["f1_at_threshold"] == pytest.approx(skm.f1_score(y, served.is_anomaly))
    assert got["base_rate"] == pytest.approx(80 / len(y))
    lo, hi = got["bootstrap_95"]["roc_auc"]
    assert lo <= got["roc_auc"] <= hi
    assert f"| ROC AUC | {auc:.3f} |" in (out / "report.md").read_text()


def test_evaluate_threshold_share_matches_the_served_flags(models_dir, ae_report, labelled_digits) -> None:
    out, metrics = ae_report
    _, x, y = labelled_digits
    served = _served_scores(models_dir / "digits-ae" / "1", x)
    check = metrics["threshold_check"]
    assert check["threshold"] == pytest.approx(served.threshold)
    assert check["flagged_share"] == pytest.approx(served.is_anomaly.mean())
    assert check["flagged_share_label0"] == pytest.approx(served.is_anomaly[y == 0].mean())
    assert f"it flags {100 * served.is_anomaly.mean():.1f} % of these {len(x)} rows" in (out / "report.md").read_text()


def test_evaluate_without_labels_skips_the_label_sections_and_says_so(vae_report) -> None:
    out, metrics = vae_report
    assert "anomaly_detection" not in metrics
    assert metrics["skipped"]["Anomaly detection"].startswith("no labels given")
    assert "Skipped: no labels given" in (out / "report.md").read_text()
    assert "Skipped: no labels given" in (out / "report.html").read_text()
    assert "flagged_share" in metrics["threshold_check"]  # the threshold check runs without labels


def test_evaluate_vae_bounds_are_ordered_and_match_the_served_elbo(models_dir, vae_report, digits) -> None:
    _, metrics = vae_report
    lik = metrics["likelihood"]
    assert lik["likelihood"] == "bernoulli" and lik["iw_samples"] == 16
    assert lik["negative_iwae_nats"] <= lik["negative_elbo_nats"]
    # The served Bernoulli vae score is −ELBO over 16 fixed draws: its mean estimates the same number.
    served = _served_scores(models_dir / "digits-vae" / "1", digits)
    assert lik["negative_elbo_nats"] == pytest.approx(served.scores.mean(), rel=0.02)
    latent = metrics["latent_space"]
    assert len(latent["kl_per_dimension"]) == latent["latent_dim"] == len(latent["active_mask"])


def test_evaluate_sample_quality_has_real_floors(vae_report) -> None:
    _, metrics = vae_report
    q = metrics["sample_quality"]
    assert q["rows_per_half"] == 1797 // 2
    assert q["precision_real_floor"] > 0.8 and q["recall_real_floor"] > 0.8
    assert q["frechet_distance"] > q["frechet_distance_real_floor"]  # a 3-epoch vae is no match for real data
    assert "c2st_auc" not in q  # image data: the two-sample classifier is for tabular data


def test_evaluate_gan_skips_what_it_cannot_do(models_dir, tmp_path) -> None:
    out, metrics = evaluate(models_dir / "digits-gan" / "1", "digits", None, tmp_path, n_boot=10)
    assert set(metrics["skipped"]) >= {"Reconstruction", "Likelihood", "Latent space", "Anomaly detection"}
    assert 0.0 <= metrics["sample_quality"]["precision"] <= 1.0
    assert (out / "samples.png").read_bytes().startswith(PNG)


# ----- a small tabular model: contributions and the classifier two-sample test --------------------
@pytest.fixture(scope="module")
def tabular(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model folder, data CSV with a header, labels file) for an ae trained on 6 correlated features."""
    from training.cli import main as train_main

    root = tmp_path_factory.mktemp("tabular")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 2))
    x = z @ rng.normal(size=(2, 6)) + 0.1 * rng.normal(size=(500, 6))
    y = np.zeros(500, int)
    y[:25] = 1
    x[:25, 3] += 4.0  # anomalies: feature 'd' far off the data's plane
    data = root / "table.csv"
    np.savetxt(data, x, delimiter=",", header="a,b,c,d,e,f", comments="", fmt="%.5f")
    labels = root / "labels.txt"
    labels.write_text("\n".join(map(str, y)) + "\n")
    argv = ["train", "ae", "--data", str(data), "--name", "table-ae", "--models", str(root / "models")]
    assert train_main(argv + ["--epochs", "20", "--runs", str(root / "runs"), "--quiet"]) == 0
    return root / "models" / "table-ae" / "1", data, labels


def test_evaluate_tabular_names_the_features_of_the_top_flagged_rows(tabular, tmp_path) -> None:
    folder, data, labels = tabular
    out, metrics = evaluate(folder, str(data), str(labels), tmp_path, n_boot=50)
    top = metrics["contributions"]
    assert len(top) == 10
    assert sum(r["row"] <= 25 for r in top) >= 8  # the anomalies are the first 25 rows
    assert sum(r["top_features"][0]["feature"] == "d" for r in top) >= 8
    assert 0.0 <= metrics["sample_quality"]["c2st_auc"] <= 1.0
    assert "Per-feature contributions" not in metrics["skipped"]


# ----- refusals: one line, exit code 2 ------------------------------------------------------------
def _refusal(capsys, *argv: str) -> str:
    assert latentserve(["evaluate", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentserve evaluate: error: "), err
    return err[0]


def test_evaluate_refuses_labels_that_are_not_0_or_1(models_dir, tmp_path, capsys) -> None:
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(str(i % 10) for i in range(1797)))
    msg = _refusal(capsys, str(models_dir / "digits-ae" / "1"), "--data", "digits", "--labels", str(labels))
    assert "must hold 0 (normal) or 1 (anomaly)" in msg and "row 3 holds 2" in msg


def test_evaluate_refuses_one_class_labels_and_unknown_columns(models_dir, tmp_path, capsys) -> None:
    labels = tmp_path / "zeros.txt"
    labels.write_text("0\n" * 1797)
    folder = str(models_dir / "digits-ae" / "1")
    assert "only 0s" in _refusal(capsys, folder, "--data", "digits", "--labels", str(labels))
    assert "neither a file nor a column" in _refusal(capsys, folder, "--data", "digits", "--labels", "target")


def test_evaluate_refuses_a_wrong_feature_count_naming_both(models_dir, tmp_path, capsys) -> None:
    data = tmp_path / "narrow.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(50, 10)), delimiter=",")
    msg = _refusal(capsys, str(models_dir / "digits-ae" / "1"), "--data", str(data))
    assert "has 10 features per row" in msg and "expects 64" in msg


def test_evaluate_refuses_an_empty_file(models_dir, tmp_path, capsys) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("")
    assert "is empty" in _refusal(capsys, str(models_dir / "digits-ae" / "1"), "--data", str(data))


def test_evaluate_refuses_a_model_that_fails_its_checks_with_its_reason(copy_model, tamper, tmp_path, capsys) -> None:
    folder = copy_model("digits-ae", tmp_path / "repo")
    tamper(folder / "encoder.onnx")
    msg = _refusal(capsys, str(folder), "--data", "digits")
    assert "refused" in msg and "encoder graph file encoder.onnx fails its sha256 check" in msg


def test_evaluate_resolves_a_name_to_its_newest_version_or_says_what_exists(models_dir, tmp_path, capsys) -> None:
    msg = _refusal(capsys, "digits-xl", "--models", str(models_dir), "--data", "digits")
    assert "no model named 'digits-xl'" in msg and "digits-ae" in msg
    repo = tmp_path / "repo"
    shutil.copytree(models_dir / "digits-ae", repo / "digits-ae")
    data = tmp_path / "narrow.csv"
    np.savetxt(data, np.zeros((5, 3)), delimiter=",")
    # The name resolves (to version 2, the newest): the refusal is then about the data.
    assert "version 2 expects 64" in _refusal(capsys, "digits-ae", "--models", str(repo), "--data", str(data))


def test_split_labels_reads_an_npz_array_a_column_number_and_drops_the_column(tmp_path) -> None:
    from training.data import load
    from training.evaluate import split_labels

    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    y = (np.arange(30) % 3 == 0).astype(np.int8)
    np.savez(tmp_path / "odds.npz", X=x, y=y)
    ds, labels = split_labels(load(str(tmp_path / "odds.npz")), "y")
    assert ds.x.shape == (30, 4) and labels.tolist() == y.tolist()
    np.savetxt(tmp_path / "t.csv", np.c_[x, y], delimiter=",")
    ds, labels = split_labels(load(str(tmp_path / "t.csv")), "5")
    np.testing.assert_array_equal(ds.x, x)
    assert labels.tolist() == y.tolist()


def test_match_columns_reorders_by_name_and_notes_a_mismatch() -> None:
    from training.data import Dataset
    from training.evaluate import match_columns

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    shuffled = Dataset(x, "t.csv", feature_names=["c", "a", "b"])
    ds, note = match_columns(shuffled, ["a", "b", "c"])
    np.testing.assert_array_equal(ds.x, x[:, [1, 2, 0]])
    assert ds.feature_names == ["a", "b", "c"] and "reordered" in note
    ds, note = match_columns(Dataset(x, "t.csv", feature_names=["a", "b", "z"]), ["a", "b", "c"])
    np.testing.assert_array_equal(ds.x, x)
    assert "'z' (model: 'c')" in note
    assert match_columns(Dataset(x, "t.csv"), ["a", "b", "c"]) == (Dataset(x, "t.csv"), None)
