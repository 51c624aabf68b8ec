"""Model lifecycle: every way an artifact can be damaged is refused with its reason while the
others serve; reload (HTTP and SIGHUP) swaps versions atomically under traffic and keeps the
previous ones when it fails; SIGTERM drains the requests in flight and exits 0."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from artifact.manifest import Manifest
from service.app import create_app
from service.errors import ModelFailed
from service.schemas import DIGIT_0
from service.settings import Settings
from tests.live_server import LiveServer, slow_body

ROW = [float(v) for v in DIGIT_0]
KEY = "lifecycle-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json"}


def publish(src: Path, dst: Path, version: int) -> Path:
    """A copy of an artifact folder as another version (its manifest rewritten to match)."""
    shutil.copytree(src, dst)
    Manifest.read(dst).model_copy(update={"version": version}).write(dst)
    return dst


def edit_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def rehash(folder: Path, role: str, fmt: str = "onnx") -> None:
    """Make the manifest agree with a damaged file, so that the checks after the hash are reached."""
    spec_file = json.loads((folder / "manifest.json").read_text())["graphs"][role][fmt]["file"]
    digest = hashlib.sha256((folder / spec_file).read_bytes()).hexdigest()
    edit_manifest(folder, lambda m: m["graphs"][role][fmt].update(sha256=digest))


# ----- damage, refused with its reason ------------------------------------------------------------
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def link_outside(path: Path) -> None:
    outside = path.parents[3] / "outside"
    outside.mkdir(exist_ok=True)
    target = outside / path.name
    shutil.copy(path, target)  # same bytes, same hash: only where it lives is wrong
    path.unlink()
    path.symlink_to(target)


def _truncated_and_rehashed(f: Path) -> None:
    truncate(f / "decoder.onnx")
    rehash(f, "decoder")


def _graphs_swapped(f: Path) -> None:
    shutil.copy(f / "encoder.onnx", f / "decoder.onnx")
    rehash(f, "decoder")


def _padded(f: Path) -> None:
    with open(f / "manifest.json", "ab") as out:
        out.write(b" " * (17 << 20))


DAMAGE = {
    "truncated-graph": (lambda f: truncate(f / "decoder.onnx"), "decoder graph file decoder.onnx fails its sha256"),
    "truncated-graph-rehashed": (_truncated_and_rehashed, "decoder graph file decoder.onnx cannot be loaded"),
    "graphs-swapped": (_graphs_swapped, "decoder graph file decoder.onnx cannot be loaded: decoder.onnx has inputs"),
    "graph-missing": (lambda f: (f / "decoder.onnx").unlink(), "decoder graph file decoder.onnx is missing"),
    "graph-is-a-folder": (
        lambda f: ((f / "decoder.onnx").unlink(), (f / "decoder.onnx").mkdir()),
        "decoder graph file decoder.onnx is missing",
    ),
    "graph-links-outside": (lambda f: link_outside(f / "decoder.onnx"), "decoder.onnx is a link that leads outside"),
    "manifest-links-outside": (
        lambda f: link_outside(f / "manifest.json"),
        "manifest.json is a link that leads outside",
    ),
    "manifest-missing": (lambda f: (f / "manifest.json").unlink(), "manifest.json is missing"),
    "manifest-is-a-fifo": (
        lambda f: ((f / "manifest.json").unlink(), os.mkfifo(f / "manifest.json")),
        "manifest.json is missing (or not a regular file)",
    ),
    "manifest-not-json": (
        lambda f: (f / "manifest.json").write_text('{"name": "digits-ae",'),
        "manifest.json is invalid",
    ),
    "manifest-empty": (lambda f: (f / "manifest.json").write_text(""), "manifest.json is invalid"),
    "manifest-not-utf8": (lambda f: (f / "manifest.json").write_bytes(b"\xff\xfe{}"), "manifest.json is invalid"),
    "manifest-a-list": (lambda f: (f / "manifest.json").write_text("[]"), "manifest.json is invalid"),
    "manifest-too-large": (_padded, "more than a manifest can be"),
    "manifest-file-outside-the-folder": (
        lambda f: edit_manifest(
            f, lambda m: m["graphs"]["decoder"]["onnx"].update(file="../../digits-vae/1/decoder.onnx")
        ),
        "graph file must be a plain file name inside the artifact",
    ),
    "manifest-absolute-file": (
        lambda f: edit_manifest(f, lambda m: m["graphs"]["decoder"]["onnx"].update(file="/etc/passwd")),
        "graph file must be a plain file name inside the artifact",
    ),
    "manifest-bad-hash-format": (
        lambda f: edit_manifest(f, lambda m: m["graphs"]["decoder"]["onnx"].update(sha256="xyz")),
        "manifest.json is invalid: graphs.decoder.onnx.sha256",
    ),
    "manifest-unknown-field": (lambda f: edit_manifest(f, lambda m: m.update(pickle="x")), "manifest.json is invalid"),
    "manifest-wrong-name": (
        lambda f: edit_manifest(f, lambda m: m.update(name="digits-vae")),
        "describes digits-vae version 1, but sits in the folder of digits-ae version 1",
    ),
}


@pytest.fixture
def damaged(copy_model, load_repository, tmp_path):
    """damaged(damage) -> a repository of digits-ae version 1 (damaged) and an intact digits-vae."""

    def build(damage):
        root = tmp_path / "repo"
        damage(copy_model("digits-ae", root))
        copy_model("digits-vae", root)
        return load_repository(root)

    return build


@pytest.mark.parametrize(("damage", "reason"), DAMAGE.values(), ids=DAMAGE.keys())
def test_repository_refuses_damage_with_its_reason_and_serves_the_rest(damaged, damage, reason):
    repository = damaged(damage)
    refused = repository.models["digits-ae"][1]
    assert refused.state == "failed"
    assert reason in refused.reason
    assert str(repository.root) not in refused.reason  # no server paths in what clients see
    assert repository.get("digits-vae").state == "ready"
    with pytest.raises(ModelFailed, match="was refused at load"):
        repository.get("digits-ae")


def test_repository_refuses_a_version_folder_linked_from_outside(copy_model, load_repository, tmp_path):
    copy_model("digits-vae", tmp_path / "repo")
    outside = copy_model("digits-ae", tmp_path / "outside")
    (tmp_path / "repo" / "digits-ae").mkdir()
    (tmp_path / "repo" / "digits-ae" / "1").symlink_to(outside)
    repository = load_repository(tmp_path / "repo")
    assert "the version folder is a link that leads outside" in repository.models["digits-ae"][1].reason
    assert repository.get("digits-vae").state == "ready"


IGNORED = {
    "v2": "version folders are named by a positive integer",
    "latest": "version folders are named by a positive integer",
    "01": "without leading zeros",
    "0": "version folders are named by a positive integer",
    "\u00b2": "version folders are named by a positive integer",  # '²'.isdigit() is True; int('²') fails
    "\u0661": "version folders are named by a positive integer",  # Arabic-Indic 1: int() would say 1
}


@pytest.mark.parametrize("folder", IGNORED, ids=["v2", "latest", "leading-zero", "zero", "superscript", "arabic"])
def test_repository_ignores_version_folders_that_are_not_versions(copy_model, load_repository, tmp_path, folder):
    first = copy_model("digits-ae", tmp_path)
    shutil.copytree(first, tmp_path / "digits-ae" / folder)
    repository = load_repository(tmp_path)
    assert list(repository.models["digits-ae"]) == [1] and repository.get("digits-ae").version == 1
    assert repository.ignored == [{"path": f"digits-ae/{folder}", "reason": repository.ignored[0]["reason"]}]
    assert IGNORED[folder] in repository.ignored[0]["reason"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda root, outside: (root / "linked").symlink_to(outside / "digits-ae"),
            "leads outside the model repository",
        ),
        (lambda root, outside: (root / "bad name").mkdir(), "not a valid model name"),
        (lambda root, outside: (root / "empty").mkdir(), "holds no version folder"),
    ],
    ids=["model-folder-links-outside", "invalid-name", "no-versions"],
)
def test_repository_ignores_model_folders_that_are_not_models(copy_model, load_repository, tmp_path, make, reason):
    copy_model("digits-ae", tmp_path / "outside")
    copy_model("digits-vae", tmp_path / "repo")
    make(tmp_path / "repo", tmp_path / "outside")
    repository = load_repository(tmp_path / "repo")
    assert list(repository.models) == ["digits-vae"] and repository.problems() == []
    assert len(repository.ignored) == 1 and reason in repository.ignored[0]["reason"]


@pytest.mark.anyio
async def test_refusals_show_in_readyz_and_models(copy_model, load_repository, tamper, tmp_path):
    tamper(copy_model("digits-ae", tmp_path) / "decoder.onnx")
    copy_model("digits-vae", tmp_path)
    (tmp_path / "digits-vae" / "v2").mkdir()
    app = create_app(Settings(models=tmp_path), load_repository(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        ready, models = await c.get("/readyz"), await c.get("/models")
        served = await c.post("/encode", json={"model": "digits-vae", "inputs": [ROW]})
    assert ready.status_code == 503 and "digits-ae version 1 was refused: decoder graph file" in ready.json()["error"]
    assert models.status_code == 200
    version = models.json()["models"][0]["versions"][0]
    assert version["state"] == "failed" and "decoder.onnx fails its sha256 check" in version["reason"]
    assert models.json()["ignored"][0]["path"] == "digits-vae/v2"
    assert served.status_code == 200


# ----- reload, without HTTP ---------------------------------------------------------------------------
@pytest.fixture
def repo(copy_model, load_repository, tmp_path):
    copy_model("digits-ae", tmp_path)
    copy_model("digits-vae", tmp_path)
    return load_repository(tmp_path)


def test_reload_loads_a_new_version_and_makes_it_the_default(repo):
    publish(repo.root / "digits-ae" / "1", repo.root / "digits-ae" / "2", 2)
    report = repo.reload()
    assert report.loaded == ["digits-ae 2"] and report.refused == [] and report.unchanged == 2
    assert repo.get("digits-ae").version == 2 and repo.get("digits-ae", 1).state == "ready"


def test_reload_keeps_the_serving_runtimes(repo):
    before = repo.get("digits-vae")
    repo.reload()
    assert repo.get("digits-vae") is before  # not reloaded, not re-warmed


def test_reload_that_refuses_a_version_keeps_the_previous_one_serving(repo, tamper):
    tamper(publish(repo.root / "digits-ae" / "1", repo.root / "digits-ae" / "2", 2) / "encoder.onnx")
    report = repo.reload()
    assert report.loaded == [] and report.refused[0]["version"] == 2
    assert "encoder.onnx fails its sha256 check" in report.refused[0]["reason"]
    assert repo.get("digits-ae").version == 1  # the newest ready version is the default
    assert repo.problems() == [] and "digits-ae version 2: encoder graph file" in repo.refused()[0]


def test_reload_drops_a_version_removed_from_disk(repo):
    publish(repo.root / "digits-ae" / "1", repo.root / "digits-ae" / "2", 2)
    repo.reload()
    shutil.rmtree(repo.root / "digits-ae" / "2")
    report = repo.reload()
    assert report.removed == ["digits-ae 2"] and list(repo.models["digits-ae"]) == [1]


def test_reload_retries_a_version_fixed_on_disk(copy_model, load_repository, tamper, tmp_path):
    folder = copy_model("digits-ae", tmp_path)
    pristine = (folder / "decoder.onnx").read_bytes()
    tamper(folder / "decoder.onnx")
    repository = load_repository(tmp_path)
    assert repository.problems()  # refused at start: not ready
    (folder / "decoder.onnx").write_bytes(pristine)
    assert repository.reload().loaded == ["digits-ae 1"]
    assert repository.problems() == [] and repository.get("digits-ae").state == "ready"


def test_reload_reports_a_repository_it_cannot_read(repo):
    shutil.rmtree(repo.root)
    report = repo.reload()
    assert "cannot read the model repository" in report.error and report.unchanged == 2
    assert repo.get("digits-vae").state == "ready"  # loaded graphs keep serving


def test_reload_never_shows_a_half_loaded_model(repo):
    errors, seen, stop = [], set(), threading.Event()

    def lookups() -> None:
        while not stop.is_set():
            try:
                model = repo.get("digits-ae")
                model.encode([ROW])
                seen.add(model.version)
            except Exception as e:  # noqa: BLE001 - any failure is the test's finding
                errors.append(repr(e))

    threads = [threading.Thread(target=lookups) for _ in range(3)]
    for t in threads:
        t.start()
    for v in (2, 3, 4):
        publish(repo.root / "digits-ae" / "1", repo.root / "digits-ae" / str(v), v)
        repo.reload()
    for _ in range(500):  # until a lookup has seen the last version
        if 4 in seen:
            break
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and 4 in seen


# ----- reload on a real server, under traffic --------------------------------------------------------
class Traffic:
    """Threads sending valid requests until stopped; every answer is recorded."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url, self.stopped = url, threading.Event()
        self.answers: list[tuple[int, int | None]] = []  # (status, version)
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        path, body = [
            ("/encode", {"model": "digits-ae", "inputs": [ROW]}),
            ("/anomaly-score", {"model": "digits-vae", "inputs": [ROW]}),
            ("/sample", {"model": "digits-ae", "n": 2, "seed": 1}),
        ][i % 3]
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=30) as client:
            while not self.stopped.is_set():
                try:
                    r = client.post(path, json=body)
                    self.answers.append((r.status_code, r.json().get("version")))
                except httpx.HTTPError as e:
                    self.answers.append((0, None))
                    print("transport error:", e)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)
        self.stopped.set()
        for t in self.threads:
            t.join()


@pytest.fixture(scope="module")
def live(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("live_repository")
    for name in ("digits-ae", "digits-vae"):
        shutil.copytree(models_dir / name / "1", root / name / "1")
    server = LiveServer(root, root.parent / "serve.log", env={"LATENTSERVE_API_KEY": KEY})
    server.client.headers.update(AUTH)
    server.wait()
    server.root = root
    yield server
    assert server.stop() == 0


def test_admin_reload_under_traffic_loses_no_request(live):
    publish(live.root / "digits-ae" / "1", live.root / "digits-ae" / "2", 2)
    with Traffic(live.url) as traffic:
        r = live.client.post("/admin/reload")
    assert r.status_code == 200 and r.json()["loaded"] == ["digits-ae 2"]
    assert {status for status, _ in traffic.answers} == {200}
    assert {v for _, v in traffic.answers} >= {1, 2}  # digits-vae is 1; digits-ae went to 2


def test_admin_reload_that_fails_under_traffic_keeps_serving_and_says_why(live, tamper):
    tamper(publish(live.root / "digits-ae" / "1", live.root / "digits-ae" / "3", 3) / "decoder.onnx")
    with Traffic(live.url) as traffic:
        r = live.client.post("/admin/reload")
    assert r.status_code == 409
    assert "refused digits-ae version 3: decoder graph file decoder.onnx fails its sha256" in r.json()["error"]
    assert {status for status, _ in traffic.answers} == {200} and 3 not in {v for _, v in traffic.answers}
    versions = live.client.get("/models/digits-ae").json()["versions"]
    assert versions[0]["version"] == 3 and versions[0]["state"] == "failed" and "sha256" in versions[0]["reason"]
    ready = live.client.get("/readyz")
    assert ready.status_code == 200 and "digits-ae version 3" in ready.json()["refused"][0]
    shutil.rmtree(live.root / "digits-ae" / "3")


def test_sighup_reloads_the_repository(live):
    publish(live.root / "digits-ae" / "1", live.root / "digits-ae" / "4", 4)
    live.signal(signal.SIGHUP)
    for _ in range(100):
        if live.client.get("/readyz").json()["models"]["digits-ae"][-1] == 4:
            break
        time.sleep(0.1)
    assert live.client.post("/encode", json={"model": "digits-ae", "inputs": [ROW]}).json()["version"] == 4


# ----- SIGTERM ---------------------------------------------------------------------------------------
def test_sigterm_reports_not_ready_then_drains_requests_in_flight(models_dir, tmp_path):
    server = LiveServer(models_dir, tmp_path / "serve.log", "--shutdown-delay-s", "2", "--shutdown-grace-s", "10")
    server.wait()
    body = {"model": "digits-ae", "inputs": [ROW] * 20}
    answers: list[int] = []

    def slow_request() -> None:
        r = httpx.post(f"{server.url}/encode", content=slow_body(body, 2.5), headers=JSON, timeout=30)
        answers.append(r.status_code)

    uploads = [threading.Thread(target=slow_request) for _ in range(3)]
    for t in uploads:
        t.start()
    time.sleep(0.5)  # all three are in flight
    server.signal(signal.SIGTERM)
    time.sleep(0.2)
    ready = httpx.get(f"{server.url}/readyz", timeout=5)
    during = httpx.post(f"{server.url}/encode", json=body, timeout=5)  # inside the delay: still served
    for t in uploads:
        t.join()
    exit_code = server.process.wait(timeout=20)
    assert ready.status_code == 503 and ready.json()["status"] == "stopping"
    assert during.status_code == 200 and during.headers["connection"] == "close"
    assert answers == [200, 200, 200]
    assert exit_code == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_sigterm_grace_period_bounds_the_drain(models_dir, tmp_path):
    flags = ("--shutdown-delay-s", "0", "--shutdown-grace-s", "1", "--request-timeout-s", "60")
    server = LiveServer(models_dir, tmp_path / "serve.log", *flags)
    server.wait()
    answers: list[object] = []

    def endless() -> None:
        try:
            answers.append(
                httpx.post(
                    f"{server.url}/encode", content=slow_body({"inputs": [ROW] * 20}, 8), headers=JSON, timeout=30
                )
            )
        except httpx.HTTPError as e:
            answers.append(e)

    upload = threading.Thread(target=endless)
    upload.start()
    time.sleep(0.5)
    start = time.monotonic()
    server.signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=20)
    took = time.monotonic() - start
    upload.join()
    assert exit_code == 0 and took < 6, (took, server.output()[-2000:])
    assert "timeout graceful shutdown exceeded" in server.output()


def test_sigint_stops_at_once_with_status_0(models_dir, tmp_path):
    server = LiveServer(models_dir, tmp_path / "serve.log", "--shutdown-delay-s", "30")
    server.wait()
    start = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.process.wait(timeout=20) == 0 and time.monotonic() - start < 5  # no 30 s delay


def test_sigterm_under_load_answers_every_accepted_connection(models_dir, tmp_path):
    """8 clients keep posting through a SIGTERM without watching /readyz: every request on an accepted
    connection gets a 200 or a 503; the only failures allowed are refused connects, once the port is closed."""
    server = LiveServer(models_dir, tmp_path / "serve.log", "--shutdown-delay-s", "0.5", "--shutdown-grace-s", "5")
    server.wait()
    answers: list[int] = []
    failures: list[str] = []
    stopped = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stopped.is_set():
                try:
                    answers.append(c.post("/encode", json={"model": "digits-ae", "inputs": [ROW]}).status_code)
                except httpx.ConnectError:  # refused: the port is closed, this client is done
                    return
                except httpx.HTTPError as e:  # reset or dropped on an accepted connection
                    failures.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = len(answers)
    server.signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=30)
    stopped.set()
    for t in threads:
        t.join(timeout=30)
    assert exit_code == 0
    assert failures == [], failures[:5]
    assert set(answers) <= {200, 503} and len(answers) > before > 0


# ----- several workers ------------------------------------------------------------------------------
def _all_on_version(url: str, version: int, tries: int = 100) -> bool:
    """40 requests in a row, each on a new connection (spread over the workers), all served by `version`."""
    for _ in range(tries):
        seen = {
            httpx.post(f"{url}/encode", json={"model": "digits-ae", "inputs": [ROW]}, headers=AUTH).json()["version"]
            for _ in range(40)
        }
        if seen == {version}:
            return True
        time.sleep(0.1)
    return False


def test_workers_one_reload_reaches_every_worker_and_they_drain(models_dir, tmp_path):
    root = tmp_path / "repository"
    shutil.copytree(models_dir / "digits-ae" / "1", root / "digits-ae" / "1")
    server = LiveServer(root, tmp_path / "serve.log", "--workers", "2", env={"LATENTSERVE_API_KEY": KEY})
    server.client.headers.update(AUTH)
    server.wait()
    publish(root / "digits-ae" / "1", root / "digits-ae" / "2", 2)
    assert server.client.post("/admin/reload").status_code == 200  # reaches one worker, which relays it
    assert _all_on_version(server.url, 2), server.output()[-3000:]
    publish(root / "digits-ae" / "1", root / "digits-ae" / "3", 3)
    server.signal(signal.SIGHUP)  # to the supervisor
    assert _all_on_version(server.url, 3), server.output()[-3000:]
    server.signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert server.output().count("Finished server process") == 2
