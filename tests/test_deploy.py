"""The manifests under deploy/, offline: they render, they validate, and they agree with the code.

Core kinds go through `kubernetes-validate --strict`; custom resources (KServe, KubeRay) through
jsonschema against the published CRD schemas in <root>/shared/schemas (beside the checkout),
made strict the way `kubectl --validate=strict` is: unknown fields are errors. Ports, probe
paths and grace periods are compared with service/settings.py, service/limits.py, the routes
and the Dockerfile, never with copies of their values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.limits import PROBES
from service.ray_config import parse_args
from service.routes import router
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"
OVERLAYS = ["k8s/overlays/cpu", "k8s/overlays/gpu", "kserve", "kuberay"]
CORE_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim"}
CRDS = {
    ("serving.kserve.io", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("ray.io", "RayService"): "ray.io_rayservices.yaml",
}
K8S_VERSION = "1.32.0"  # the oldest version these manifests promise (PodDisruptionBudget v1, HPA v2)
KILL_MARGIN_S = 15  # terminationGracePeriodSeconds may exceed the drain by at most this


@cache
def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed (apt-get install kubectl): the overlays cannot be rendered"
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / overlay)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD does not preserve them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    preserves = out.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserves:
        out["additionalProperties"] = False
    return out


@cache
def crd_schema(group: str, version: str, kind: str) -> dict[str, Any]:
    path = SCHEMAS / CRDS[(group, kind)]
    if not path.is_file():
        raise AssertionError(f"{path} is missing: the published CRD schemas live in <root>/shared/schemas")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2 MB of YAML
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert version in versions, f"{kind} has no version {version} in {path.name}; it has {sorted(versions)}"
    return strict(versions[version]["schema"]["openAPIV3Schema"])


def settings_of(container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings this container's LATENTSERVE_* environment gives (an unknown name fails)."""
    for name in [k for k in __import__("os").environ if k.startswith("LATENTSERVE_")]:
        monkeypatch.delenv(name)
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    fields = {k.removeprefix("LATENTSERVE_").lower(): v for k, v in env.items() if k.startswith("LATENTSERVE_")}
    models = fields.pop("models", None)
    settings = Settings(**{**fields, "models": tmp_path})  # the folder exists on the pod, not here
    return settings.model_copy(update={"models": Path(models)}) if models is not None else settings


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert port in named, f"port {port!r} is not one of the container's named ports {sorted(named)}"
    return named[port]


def exec_sleep_s(container: dict[str, Any]) -> float:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop is not a plain sleep: {command}"
    return float(command[1])


def dockerfile_uid() -> int:
    text = (ROOT / "Dockerfile").read_text()
    users = set(re.findall(r"^USER (\d+)", text, flags=re.M))
    assert len(users) == 1, f"the Dockerfile's USER lines disagree: {users}"
    return int(users.pop())


def get_routes() -> set[str]:
    return {r.path for r in router.routes if "GET" in getattr(r, "methods", set())}


# ----- rendering and schema validation ------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_overlay_renders(overlay: str) -> None:
    docs = render(overlay)
    assert docs, f"{overlay} rendered nothing"
    assert all(d.get("metadata", {}).get("name") for d in docs), "every resource needs a name"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_core_kinds_validate_strictly(overlay: str) -> None:
    core = [d for d in render(overlay) if d["kind"] in CORE_KINDS]
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError with the path
    kinds = {d["kind"] for d in render(overlay)}
    assert kinds <= CORE_KINDS | {kind for _, kind in CRDS}, f"{overlay}: unexpected kinds {kinds}"


def test_deploy_strict_validation_catches_a_typo() -> None:
    deployment = yaml.safe_load(yaml.safe_dump(one(render("k8s/overlays/cpu"), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["kserve", "kuberay"])
def test_deploy_custom_resources_match_published_crds(overlay: str) -> None:
    custom = [d for d in render(overlay) if d["kind"] not in CORE_KINDS]
    assert custom, f"{overlay} holds no custom resource"
    for doc in custom:
        group, version = doc["apiVersion"].split("/")
        errors = list(jsonschema.Draft7Validator(crd_schema(group, version, doc["kind"])).iter_errors(doc))
        assert not errors, "\n".join(f"{doc['kind']} {list(e.absolute_path)}: {e.message}" for e in errors)


def test_deploy_crd_check_catches_an_unknown_field() -> None:
    service = yaml.safe_load(yaml.safe_dump(one(render("kserve"), "InferenceService")))
    service["spec"]["predictor"]["model"]["storageURI"] = "pvc://typo"
    schema = crd_schema("serving.kserve.io", "v1beta1", "InferenceService")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(service)), "an unknown field passed"


@pytest.mark.parametrize("overlay", ["kserve", "kuberay"])
def test_deploy_pod_templates_in_custom_resources_validate(overlay: str) -> None:
    """The containers inside the custom resources are core Containers: validated as Pods."""
    pods: list[dict[str, Any]] = []
    for doc in render(overlay):
        if doc["kind"] == "ServingRuntime":
            pods.append({"containers": doc["spec"]["containers"]})
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
            pods += [g["template"]["spec"] for g in groups]
    assert pods
    for spec in pods:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


# ----- agreement with the code -------------------------------------------------------------------
@pytest.mark.parametrize("overlay", ["k8s/overlays/cpu", "k8s/overlays/gpu"])
def test_deploy_probes_ports_and_drain_match_settings(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = one(render(overlay), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    settings = settings_of(container, tmp_path, monkeypatch)
    assert settings.host == "0.0.0.0", "the pod must listen beyond loopback for its Service and kubelet"
    assert [p["containerPort"] for p in container["ports"]] == [settings.port]
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], live["path"]) == ("/readyz", "/healthz")
    for probe in (ready, live):
        assert probe["path"] in PROBES, f"{probe['path']} is not exempt from admission control (service/limits.py)"
        assert probe["path"] in get_routes(), f"{probe['path']} is not a GET route of the service"
        assert container_port(container, probe["port"]) == settings.port
    drain = exec_sleep_s(container) + settings.shutdown_delay_s + settings.shutdown_grace_s
    grace = pod["terminationGracePeriodSeconds"]
    assert drain <= grace <= drain + KILL_MARGIN_S, f"grace period {grace} s vs preStop + delay + grace = {drain} s"


def test_deploy_probe_meanings_hold_in_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Liveness must answer 200 while models are not ready; readiness must not."""
    for name in [k for k in __import__("os").environ if k.startswith("LATENTSERVE_")]:
        monkeypatch.delenv(name)
    client = TestClient(create_app(Settings(models=tmp_path)))  # an empty repository: never ready
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_deploy_pods_run_as_the_image_user_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = dockerfile_uid()
    for overlay in ("k8s/overlays/cpu", "k8s/overlays/gpu"):
        pod = one(render(overlay), "Deployment")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        models = settings_of(container, tmp_path, monkeypatch).models
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[str(models)]["readOnly"] is True, "the model volume must be mounted read-only"
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[str(models)]["name"])
        assert volume["persistentVolumeClaim"]["readOnly"] is True


@pytest.mark.parametrize("overlay", ["k8s/overlays/cpu", "k8s/overlays/gpu"])
def test_deploy_selectors_and_targets_point_at_the_deployment(overlay: str) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one(docs, "Service")["spec"]["selector"].items() <= labels.items()
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2, "with one pod the PodDisruptionBudget would block every drain"
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    used = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert used <= claims, f"claims {used - claims} are not in the overlay"


def test_deploy_overlays_do_not_select_each_other() -> None:
    cpu = one(render("k8s/overlays/cpu"), "Service")["spec"]["selector"]
    gpu_pod = one(render("k8s/overlays/gpu"), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not cpu.items() <= gpu_pod.items(), "the cpu Service would route to gpu pods in the same namespace"


def test_deploy_kserve_runtime_matches_settings_and_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("kserve")
    runtime, service = one(docs, "ServingRuntime"), one(docs, "InferenceService")
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    settings = settings_of(container, tmp_path, monkeypatch)
    assert settings.port == 8080 and str(settings.models) == "/mnt/models" and settings.host == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [settings.port]
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    ready = container["readinessProbe"]["httpGet"]
    oip = yaml.safe_load((SCHEMAS / "open_inference_rest.yaml").read_text())
    assert ready["path"] == "/v2/health/ready" and ready["path"] in oip["paths"]
    from service import oip as oip_routes  # the service really has the route the probe asks, and exempts it

    assert ready["path"] in {getattr(r, "path", None) for r in oip_routes.router.routes}
    assert ready["path"] in PROBES
    assert container_port(container, ready["port"]) == settings.port
    live = container["livenessProbe"]["httpGet"]
    assert live["path"] in PROBES and live["path"] in get_routes()
    sc = container["securityContext"]
    assert sc["runAsUser"] == dockerfile_uid() and sc["readOnlyRootFilesystem"] is True
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "v2"
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    drain = exec_sleep_s(container) + settings.shutdown_delay_s + settings.shutdown_grace_s
    assert drain <= predictor["terminationGracePeriodSeconds"] <= drain + KILL_MARGIN_S


def test_deploy_ray_configs_are_accepted_by_build_app_args() -> None:
    """deploy/ray/serve_config.yaml and the RayService's serveConfigV2 name our builder and valid args."""
    rayservice = one(render("kuberay"), "RayService")
    configs = {
        "serve_config.yaml": yaml.safe_load((DEPLOY / "ray" / "serve_config.yaml").read_text()),
        "serveConfigV2": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    }
    import importlib

    for where, config in configs.items():
        (application,) = config["applications"]
        module, _, attribute = application["import_path"].partition(":")
        assert (module, attribute) == ("service.ray_serve", "build_app"), where
        assert importlib.util.find_spec(module) is not None, f"{where}: {module} is not importable"
        args = parse_args(application["args"])  # raises ValueError naming the bad argument
        assert args.replicas is not None or args.min_replicas <= args.max_replicas
    assert configs["serve_config.yaml"]["http_options"]["host"] == "127.0.0.1", "the local config stays on loopback"
    cluster = rayservice["spec"]["rayClusterConfig"]
    mounts = [
        m
        for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for m in g["template"]["spec"]["containers"][0]["volumeMounts"]
    ]
    models = parse_args(yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]).models
    assert all(m["mountPath"] == str(models) and m["readOnly"] for m in mounts), "every Ray node must mount the models"


def test_deploy_ray_image_matches_the_rayservice_version() -> None:
    dockerfile = (DEPLOY / "ray" / "Dockerfile").read_text()
    image_version = re.search(r"ARG RAY_IMAGE=rayproject/ray:([\d.]+)", dockerfile)
    assert image_version, "deploy/ray/Dockerfile names no rayproject/ray:<version> image"
    version = one(render("kuberay"), "RayService")["spec"]["rayClusterConfig"]["rayVersion"]
    assert image_version.group(1) == version
