"""`latentserve serve --engine ray`: the service on Ray Serve, without writing Ray code.

By default it starts a Ray cluster on this machine (usage stats off, dashboard off, a capped
object store, every address on the --host given, 127.0.0.1 unless told otherwise); with
--ray-address it joins a running cluster instead (`ray start --head` on one node, `ray start
--address ...` on the others; each node must see the model repository at the same path).
Ray's HTTP proxy serves on --host/--port. SIGHUP reloads the repository in place on every
replica (a new `generation`); SIGTERM or Ctrl-C deletes the application and stops.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import Any

from service.settings import Settings

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 128 << 20  # requests and answers travel over HTTP, not the object store
MISSING = "latentserve serve --engine ray needs Ray Serve: pip install 'latentserve[ray]'"
IMPORT_PATH = "service.ray_serve:build_app"
WORKER_NICENESS = "RAY_worker_niceness"  # read by the raylet that ray.init starts
NOT_FORWARDED = {"models", "host", "port", "api_key"}  # replicas read the key from LATENTSERVE_API_KEY


def replica_args(settings: Settings, replicas: int | None, cpus: float, gateway: bool = True) -> dict[str, Any]:
    """`build_app` args for these settings: every setting the replicas use, as the driver validated it."""
    args: dict[str, Any] = settings.model_dump(mode="json", exclude=NOT_FORWARDED)
    args["models"] = str(settings.models.resolve())
    most = replicas if replicas is not None else 2
    args["replica_cpus"] = min(1.0, cpus / most)  # N replicas fit on this machine whatever N
    if not gateway:
        args["gateway"] = False
    if replicas is not None:
        args["replicas"] = replicas
    else:
        args["max_replicas"] = max(1, int(cpus))
    return args


def application(name: str, route_prefix: str, args: dict[str, Any], user_config: Any = None) -> dict[str, Any]:
    """One application of a serve config, as `serve deploy` takes it (user_config: a per-deployment override)."""
    app: dict[str, Any] = {"name": name, "route_prefix": route_prefix, "import_path": IMPORT_PATH, "args": args}
    if user_config is not None:
        app["deployments"] = [{"name": "latentserve", "user_config": user_config}]
    return app


def deploy(applications: list[dict[str, Any]], host: str, port: int, blocking: bool = True) -> None:
    """Apply a serve config, declaratively, as `serve deploy` does (without the dashboard it would need).

    Declarative matters: Ray versions a config's code by its import path and args, so a config that
    changes only the deployment's user_config reconfigures the running replicas in place (a new args
    `generation`, or `serve.run`, would replace them, one by one).
    The applications listed are the cluster's whole set: the others are deleted.
    """
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.parse_obj({"http_options": {"host": host, "port": port}, "applications": applications})
    client = serve.context._get_global_client()
    if client is None:
        raise RuntimeError("Ray Serve is not running on this cluster: call serve.start() first")
    client.deploy_apps(schema, _blocking=blocking)


def serve_on_ray(settings: Settings, replicas: int | None, address: str | None, gateway: bool = True) -> int:
    try:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray starts its workers (the proxy and the replicas among them) at niceness 15: on a node
        # shared with anything busy they get almost no CPU (bench/ray_serve_results.md: 20x fewer
        # requests/s beside one busy process). A cluster started here runs them at our priority.
        os.environ.setdefault(WORKER_NICENESS, "0")
        import ray
        from ray import serve

        import service.ray_serve  # noqa: F401  # the replicas' module: fail here, with the message, if Ray is missing
        from service.ray_config import parse_args
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    cpus = float(os.cpu_count() or 1)
    raw = replica_args(settings, replicas, cpus, gateway)
    try:
        args = parse_args(raw)
    except ValueError as e:
        print(f"latentserve serve: {e}", file=sys.stderr)
        return 2
    temp = None
    if address is None:
        temp = tempfile.mkdtemp(prefix="latentserve-ray-")  # Ray's logs and sockets; removed at exit
        ray.init(
            address="local",
            num_cpus=int(cpus),
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _node_ip_address="127.0.0.1" if settings.host in ("127.0.0.1", "localhost") else None,
            _temp_dir=temp,
            log_to_driver=False,
        )
    else:
        ray.init(address=address, log_to_driver=False)
    stop, reload = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def on_hup(*_: object) -> None:
        reload.set()
        stop.set()

    signal.signal(signal.SIGHUP, on_hup)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        deploy([application("latentserve", "/", raw)], settings.host, settings.port)
        mode = f"{replicas} replicas" if replicas else f"1-{args.max_replicas} replicas (autoscaling)"
        print(f"latentserve: serving {settings.models} on http://{settings.host}:{settings.port} with {mode} (Ray)")
        sys.stdout.flush()
        generation = 0
        while True:
            stop.wait()
            if not reload.is_set():
                break
            stop.clear()
            reload.clear()
            generation += 1
            log.info("SIGHUP: reloading the model repository (generation %d)", generation)
            # user_config, not args: args are part of Ray's code version, and a new one restarts replicas
            deploy([application("latentserve", "/", raw, {"generation": generation})], settings.host, settings.port)
    finally:
        serve.shutdown()
        ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return 0
