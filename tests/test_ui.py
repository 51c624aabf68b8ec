"""The /ui page and the offline docs, served (no browser): what is public behind a key, what is not,
the page's headers, no off-origin URL in its files, and the calibration quantiles in /models."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.ui import STATIC
from service.ui.docs import REDOC_LOGO

KEY = "ui-test-key-0123456789-abcdef"
SHELLS = ["/ui/", "/ui/app.js", "/ui/views/score.js", "/ui/limits.json", "/docs", "/redoc", "/ui/vendor/swagger-ui.css"]


@pytest.fixture(scope="module")
def keyed(models_dir, onnx_repository):
    with TestClient(create_app(Settings(models=models_dir, api_key=KEY, max_rows=123), onnx_repository)) as c:
        yield c


@pytest.mark.parametrize("path", SHELLS)
def test_ui_shells_are_served_without_the_key(keyed, path):
    r = keyed.get(path)
    assert r.status_code == 200, r.text[:200]
    assert "'self'" in r.headers["content-security-policy"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/openapi.json"), ("GET", "/models"), ("POST", "/ui/")])
def test_ui_data_stays_behind_the_key(keyed, method, path):
    r = keyed.request(method, path)
    assert r.status_code == 401
    assert "API key" in r.json()["error"]


def test_ui_bare_path_redirects_to_the_page(keyed):
    r = keyed.get("/ui", follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/ui/")


def test_ui_limits_are_the_settings(keyed):
    assert keyed.get("/ui/limits.json").json() == {"max_rows": 123, "max_body_bytes": 16 << 20, "auth": True}


def test_ui_page_csp_allows_its_own_origin_only(keyed):
    csp = keyed.get("/ui/").headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
    assert keyed.get("/ui/app.js").headers["content-type"].startswith("text/javascript")


def test_ui_files_name_no_other_origin():
    for path in STATIC.rglob("*"):
        if path.is_file():
            urls = re.findall(r"https?://[^\s\"'`)]+", path.read_text())
            assert urls == [] or all(u == "http://www.w3.org/2000/svg" for u in urls), (path, urls)


def test_redoc_bundle_served_without_its_cdn_logo(keyed):
    body = keyed.get("/ui/vendor/redoc.standalone.js").content
    assert REDOC_LOGO[0] not in body and REDOC_LOGO[1] in body


def test_docs_shells_load_local_bundles(keyed):
    html = keyed.get("/docs").text
    assert 'src="ui/vendor/swagger-ui-bundle.js"' in html and "cdn" not in html
    assert 'src="ui/vendor/redoc.standalone.js"' in keyed.get("/redoc").text


def test_models_lists_calibration_percentile_scores(onnx_repository):
    model = onnx_repository.get("digits-ae")
    described = onnx_repository.describe("digits-ae")[0]["versions"][0]["anomaly_score"]
    q = np.array(described["quantiles"])
    assert q.shape == (101,) and np.all(np.diff(q) >= 0)
    c = model.manifest.calibration
    assert q[0] == pytest.approx(c.quantiles[0]) and q[-1] == pytest.approx(c.quantiles[-1])
    assert q[50] == pytest.approx(np.interp(0.5, c.levels, c.quantiles))
