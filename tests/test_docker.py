"""Docker without a Docker engine: lint the Dockerfile, check the compose file, and run the
image's entrypoint, health check and the compose `train` command locally."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        pending += " " + stripped.removesuffix("\\").strip() if pending else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, by stage name, in file order (the last is the default target)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions():
        if word == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            result[current] = []
        elif current is not None:
            result[current].append((word, rest))
    return result


def image_config(stage: str) -> dict[str, object]:
    """ENV, ENTRYPOINT, CMD, HEALTHCHECK and USER of a stage, following `FROM <stage>` parents."""
    chain, name, all_stages = [], stage, stages()
    froms = {n: next(r for w, r in instructions() if w == "FROM" and r.endswith(f" AS {n}")) for n in all_stages}
    while name in all_stages:
        chain.insert(0, all_stages[name])
        name = froms[name].split(" AS ")[0].strip()
    config: dict[str, object] = {"env": {}}
    for word, rest in (i for stage_instructions in chain for i in stage_instructions):
        if word == "ENV":
            config["env"].update(dict(pair.split("=", 1) for pair in shlex.split(rest)))  # type: ignore[union-attr]
        elif word in ("ENTRYPOINT", "CMD", "USER"):
            config[word.lower()] = json.loads(rest) if rest.startswith("[") else rest
        elif word == "HEALTHCHECK":
            config["healthcheck"] = json.loads(rest[rest.index("CMD") + 3 :].strip())
    return config


def local(command: list[str]) -> list[str]:
    """The container's command on this machine: `latentserve`/`python` from this environment."""
    script = Path(sys.executable).with_name("latentserve")
    if command[0] == "latentserve":
        return ([str(script)] if script.exists() else [sys.executable, "-m", "latentserve"]) + command[1:]
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    return command


# ----- Dockerfile ---------------------------------------------------------------------------------
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_default_target_is_the_serving_image():
    assert list(stages())[-1] == "serve"


def test_dockerfile_serving_image_carries_no_torch():
    serve_builder = " ".join(rest for word, rest in stages()["builder"] if word == "RUN")
    copies = [rest for word, rest in stages()["serve"] if word == "COPY"]
    assert "torch" not in serve_builder and "[serve]" in serve_builder
    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_dockerfile_torch_target_installs_torch_from_a_chosen_index():
    run = " ".join(rest for word, rest in stages()["builder-torch"] if word == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in run


@pytest.mark.parametrize("stage", ["serve", "torch"])
def test_dockerfile_runs_as_a_non_root_user(stage):
    assert image_config(stage)["user"] not in ("root", "0", "0:0")


@pytest.mark.parametrize("stage", ["serve", "torch"])
def test_dockerfile_has_a_healthcheck(stage):
    assert image_config(stage)["healthcheck"] == ["python", "-m", "service.healthcheck"]


# ----- docker-compose.yml -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_declares_train_and_api_sharing_a_named_volume(compose):
    assert {"train", "api"} <= set(compose["services"]) and "models" in compose["volumes"]
    assert compose["services"]["train"]["volumes"] == ["models:/models"]
    assert compose["services"]["api"]["volumes"] == ["models:/models:ro"]


def test_compose_api_starts_after_training_succeeds(compose):
    assert compose["services"]["api"]["depends_on"] == {"train": {"condition": "service_completed_successfully"}}


def test_compose_api_has_a_healthcheck_and_a_restart_policy(compose):
    api = compose["services"]["api"]
    assert api["healthcheck"]["test"] == ["CMD", "python", "-m", "service.healthcheck"]
    assert api["restart"] == "unless-stopped"


def test_compose_train_is_a_one_shot_job(compose):
    train = compose["services"]["train"]
    assert train["restart"] == "no" and train["build"]["target"] == "torch"


def test_compose_gpu_profile_reserves_a_gpu(compose):
    gpu = compose["services"]["api-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["profiles"] == ["gpu"] and devices[0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["LATENTSERVE_DEVICE"] == "cuda"


def test_compose_build_targets_exist_in_the_dockerfile(compose):
    targets = {s["build"]["target"] for s in compose["services"].values()}
    assert targets <= set(stages())


# ----- the containers' commands, run here ---------------------------------------------------------
def test_compose_train_command_leaves_a_filled_repository_alone(compose, models_dir):
    train = compose["services"]["train"]
    command = [*train["entrypoint"], *train["command"]]
    command[command.index("/models")] = str(models_dir)
    done = subprocess.run(local(command), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "already holds models: nothing to train" in done.stdout


def test_image_entrypoint_serves_and_its_healthcheck_passes(models_dir, tmp_path):
    config = image_config("serve")
    port = _free_port()
    # The image's own environment, pointed at this machine's models, port and loopback.
    env = {**os.environ, **config["env"], "LATENTSERVE_MODELS": str(models_dir), "LATENTSERVE_PORT": str(port)}
    env |= {"LATENTSERVE_HOST": "127.0.0.1", "PATH": os.environ["PATH"]}
    command = local([*config["entrypoint"], *config["cmd"]])
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        check = local(config["healthcheck"])
        deadline, done = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            done = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
            if done.returncode == 0:
                break
            time.sleep(0.3)
        assert done is not None and done.returncode == 0, (tmp_path / "serve.log").read_text()
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_serving_code_never_imports_torch(models_dir):
    # The serving image has no torch: loading and answering with ONNX must not need it.
    script = (
        "import sys; from service.app import create_app; from service.settings import Settings; "
        f"app = create_app(Settings(models={str(models_dir)!r})); app.state.repository.load_all(); "
        "m = app.state.repository.get('digits-vae'); m.sample(2, seed=0); m.anomaly_score([[0.0] * 64]); "
        "assert app.state.repository.problems() == [], app.state.repository.problems(); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
