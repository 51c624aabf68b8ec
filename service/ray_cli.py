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
import signal
import sys
import tempfile
import threading
from typing import Any

from service.settings import Settings

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 128 << 20  # requests and answers travel over HTTP, not the object store
MISSING = "latentserve serve --engine ray needs Ray Serve: pip install 'latentserve[ray]'"
NOT_FORWARDED = {"models", "host", "port", "api_key"}  # replicas read the key from LATENTSERVE_API_KEY


def replica_args(settings: Settings, replicas: int | None, cpus: float) -> dict[str, Any]:
    """`build_app` args for these settings: every setting the replicas use, as the driver validated it."""
    args: dict[str, Any] = settings.model_dump(mode="json", exclude=NOT_FORWARDED)
    args["models"] = str(settings.models.resolve())
    most = replicas if replicas is not None else 2
    args["replica_cpus"] = min(1.0, cpus / most)  # N replicas fit on this machine whatever N
    if replicas is not None:
        args["replicas"] = replicas
    else:
        args["max_replicas"] = max(1, int(cpus))
    return args


def serve_on_ray(settings: Settings, replicas: int | None, address: str | None) -> int:
    try:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray import serve

        from service.ray_config import parse_args
        from service.ray_serve import deployment
    except ImportError:
        print(MISSING, file=sys.stderr)
        return 2
    cpus = float(os.cpu_count() or 1)
    try:
        args = parse_args(replica_args(settings, replicas, cpus))
    except ValueError as e:
        print(f"latentserve serve: {e}", file=sys.stderr)
        return 2
    if address is None:
        ray.init(
            address="local",
            num_cpus=int(cpus),
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _node_ip_address="127.0.0.1" if settings.host in ("127.0.0.1", "localhost") else None,
            _temp_dir=tempfile.mkdtemp(prefix="latentserve-ray-"),
            log_to_driver=False,
        )
    else:
        ray.init(address=address, log_to_driver=False)
    stop, reload = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: (reload.set(), stop.set()))
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(deployment(args), name="latentserve", route_prefix="/")
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
            args = args.model_copy(update={"generation": generation})
            serve.run(deployment(args), name="latentserve", route_prefix="/")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
