"""Browser tests: Debian's chromium, driven by playwright, against a real `latentserve serve`.

Chromium is the system one (/usr/bin/chromium, or $LATENTSERVE_CHROMIUM): `playwright install`
is never run. When it is missing these tests fail, saying so, unless LATENTSERVE_BROWSER_TESTS=skip.
Every test runs under a guard: a request to anything but the server's origin is aborted and fails
the test, and so does a console error or an uncaught exception (except the HTTP statuses a test
says it expects). Screenshots of failures go to test-results/browser/ (pytest-playwright's --output).
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.live_server import LiveServer

CHROMIUM = os.environ.get("LATENTSERVE_CHROMIUM", "/usr/bin/chromium")
OPT_OUT = "LATENTSERVE_BROWSER_TESTS"
API_KEY = "browser-test-key-0123456789abcdef"
MAX_ROWS = 200  # small, so that a 300-row file goes in two chunks
HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # Keep failures' screenshots; in a folder of their own (pytest-playwright empties it at start).
    if getattr(config.option, "screenshot", None) == "off":
        config.option.screenshot = "only-on-failure"
    if getattr(config.option, "output", None) == "test-results":
        config.option.output = "test-results/browser"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session", autouse=True)
def chromium() -> str:
    """First of all (before any model is trained): is the browser there?"""
    if not Path(CHROMIUM).exists():
        if os.environ.get(OPT_OUT) == "skip":
            pytest.skip(f"chromium not found at {CHROMIUM} and {OPT_OUT}=skip")
        pytest.fail(
            f"chromium not found at {CHROMIUM}: the browser tests need it (apt-get install chromium, or set "
            f"LATENTSERVE_CHROMIUM to its path; {OPT_OUT}=skip skips them). Never `playwright install`.",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, chromium: str) -> dict:
    return {**browser_type_launch_args, "executable_path": chromium, "args": ["--no-sandbox"]}


def _wait_settled(server: LiveServer) -> None:
    """Until every version is loaded or refused (a refused one keeps /readyz at 503)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if server.client.get("/readyz").json()["status"] in ("ready", "failed"):
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"the server never finished loading:\n{server.output()}")


ORIGINS: set[str] = set()  # the servers the page may talk to


@pytest.fixture(scope="session")
def ui_repository(models_dir: Path, copy_model, tamper, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four digits kinds, and digits-broken: a copy of digits-rae with a damaged decoder (refused)."""
    root = tmp_path_factory.mktemp("ui_models")
    for kind in ("ae", "rae", "vae", "gan"):
        copy_model(f"digits-{kind}", root)
    broken = copy_model("digits-rae", root, as_name="digits-broken")
    tamper(broken / "decoder.onnx")
    _train_tabular(root, tmp_path_factory.mktemp("ui_tabular"))
    return root


TABULAR_FEATURES = ["temp", "pressure", "flow", "speed", "load"]


def tabular_rows(n: int, seed: int = 0) -> np.ndarray:
    """Five correlated sensor readings: what the `sensors` rae is trained on."""
    x = np.random.default_rng(seed).normal(size=(n, 5))
    x[:, 1] = 2 * x[:, 0] + 0.1 * x[:, 1]
    return x


def _train_tabular(root: Path, work: Path) -> None:
    """`sensors`: a small tabular rae with feature names (a CSV header), 2 epochs."""
    from training.cli import main as train_main

    data = work / "sensors.csv"
    np.savetxt(data, tabular_rows(400), delimiter=",", header=",".join(TABULAR_FEATURES), comments="", fmt="%.4f")
    argv = ["train", "rae", "--data", str(data), "--name", "sensors", "--models", str(root), "--epochs", "2"]
    assert train_main([*argv, "--seed", "0", "--runs", str(work / "runs"), "--quiet"]) == 0


@pytest.fixture(scope="session")
def server(ui_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("ui_server") / "serve.log"
    live = LiveServer(ui_repository, log, "--max-rows", str(MAX_ROWS))
    _wait_settled(live)
    ORIGINS.add(live.url)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def keyed_server(models_dir: Path, copy_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("ui_keyed_models")
    copy_model("digits-ae", root)
    live = LiveServer(root, tmp_path_factory.mktemp("ui_keyed") / "serve.log", env={"LATENTSERVE_API_KEY": API_KEY})
    live.wait()
    ORIGINS.add(live.url)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def base_url(server: LiveServer) -> str:
    return server.url


class Guard:
    """What a page did that it must not: requests off the origin, console errors, uncaught exceptions."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.posts: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def allow_status(self, *statuses: int) -> None:
        """Chromium logs every 4xx answer as a console error: allow those a test provokes on purpose."""
        for status in statuses:
            self.allowed.append(re.compile(rf"status of {status} "))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


def _same_origin(url: str) -> bool:
    return any(url == o or url.startswith(o + "/") or url.startswith(f"blob:{o}/") for o in ORIGINS)


@pytest.fixture
def guard(page) -> Iterator[Guard]:  # noqa: ANN001 - pytest-playwright's Page
    g = Guard()

    def route(r) -> None:  # noqa: ANN001
        if _same_origin(r.request.url) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            g.outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: g.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: g.errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: g.posts.append(r.url) if r.method == "POST" else None)
    yield g
    assert not g.outside, f"the page requested something outside the server's origin: {g.outside}"
    assert not g.unexpected(), f"console errors: {g.unexpected()}"


@pytest.fixture(scope="session")
def planted(digits: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """300 digits rows in which 5 are uniform pixel noise: the outliers a detector must flag."""
    x = digits[:300].copy()
    rows = [7, 64, 150, 222, 299]
    x[rows] = np.random.default_rng(11).integers(0, 17, size=(len(rows), 64))
    return x, rows


def write_csv(path: Path, x: np.ndarray, header: bool = True) -> Path:
    names = ",".join(f"pixel_{i}" for i in range(x.shape[1]))
    np.savetxt(path, x, delimiter=",", fmt="%g", header=names if header else "", comments="")
    return path


@pytest.fixture
def csv_file(tmp_path: Path):
    return lambda x, name="rows.csv", header=True: write_csv(tmp_path / name, x, header)


def drop(page, selector: str, name: str, content: bytes) -> None:  # noqa: ANN001
    """Drop a file on an element, as a user dragging it from their desktop would."""
    page.evaluate(
        """([selector, name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name));
            const zone = document.querySelector(selector);
            for (const type of ["dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
            }
        }""",
        [selector, name, base64.b64encode(content).decode()],
    )
