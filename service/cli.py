"""`latentserve serve`: run the HTTP service (the `latentserve` command dispatches here, latentserve/cli.py).

Settings come from LATENTSERVE_* variables; flags override them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

from pydantic import ValidationError

from service.settings import Settings


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latentserve serve",
        description="Serve every model in the repository over HTTP. Each flag overrides its "
        "LATENTSERVE_* environment variable (e.g. --port and LATENTSERVE_PORT).",
    )
    p.add_argument("--models", help="model repository folder (default ./model_repository)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 to expose)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--runtime", choices=["onnx", "torchscript"], help="graph runtime (default onnx)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="device (default cpu)")
    p.add_argument("--threads", type=int, help="intra-op threads per graph (default 1)")
    p.add_argument("--workers", type=int, help="worker processes on the one port (default 1)")
    p.add_argument(
        "--inference-threads", type=int, help="threads running the graphs, off the event loop (default: cores)"
    )
    p.add_argument("--inline-budget-ms", type=float, help="calls measured under this run on the loop (default 2)")
    p.add_argument("--max-rows", type=int, help="rows per request (default 10000)")
    p.add_argument("--max-body-bytes", type=int, help="request body size limit (default 16 MiB)")
    p.add_argument("--batching", action=argparse.BooleanOptionalAction, help="micro-batching (default on)")
    p.add_argument("--max-batch-rows", type=int, help="rows per batched runtime call (default 1024)")
    p.add_argument("--max-delay-us", type=int, help="how long a batch waits for more requests (default 0)")
    p.add_argument("--max-concurrency", type=int, help="requests in flight before 503 + Retry-After (default 64)")
    p.add_argument("--request-timeout-s", type=float, help="time budget per request before 504 (default 30)")
    p.add_argument("--header-timeout-s", type=float, help="time to send a request's headers (default 10)")
    p.add_argument("--shutdown-delay-s", type=float, help="after SIGTERM: serve, not ready, this long (default 1)")
    p.add_argument("--shutdown-grace-s", type=float, help="then wait this long for requests in flight (default 8)")
    p.add_argument("--cors-origins", help="comma-separated origins allowed by CORS (default: none)")
    # No --api-key flag: a command line is visible to every user of the machine (ps); use LATENTSERVE_API_KEY.
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    # Ray Serve (service/ray_cli.py; pip install 'latentserve[ray]'): replicas behind Ray's HTTP proxy.
    p.add_argument("--engine", choices=["uvicorn", "ray"], default="uvicorn", help="one process, or Ray Serve")
    p.add_argument("--replicas", type=int, help="with --engine ray: fixed replicas (default: autoscaling)")
    p.add_argument("--ray-address", help="with --engine ray: join this cluster (default: start one here)")
    p.add_argument(
        "--no-gateway",
        action="store_true",
        help="with --engine ray: Ray's proxy reaches the replicas directly, faster on small requests, "
        "but a request whose replica dies gets Ray's 500 instead of being sent to another (docs/ray.md)",
    )
    return p


RAY_FLAGS = ("engine", "replicas", "ray_address", "no_gateway")


def serve(argv: list[str]) -> int:
    args = _serve_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in RAY_FLAGS}

    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            where = f"--{field.replace('_', '-')} / LATENTSERVE_{field.upper()}"
            where = where if field != "api_key" else "LATENTSERVE_API_KEY"
            print(f"latentserve serve: invalid setting {field} ({where}): {err['msg']}", file=sys.stderr)
        return 2
    ray_only = [f"--{k.replace('_', '-')}" for k in RAY_FLAGS[1:] if getattr(args, k) not in (None, False)]
    if args.engine != "ray" and ray_only:
        print(
            f"latentserve serve: {', '.join(ray_only)} need{'s' if len(ray_only) == 1 else ''} --engine ray",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.engine == "ray":
        from service.ray_cli import serve_on_ray

        return serve_on_ray(settings, args.replicas, args.ray_address, gateway=not args.no_gateway)
    # A SIGTERM before the server runs (models still importing) is a clean exit too; from then on
    # service.lifecycle.Server handles SIGTERM, SIGINT and SIGHUP.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if not any(p.is_dir() and p.name.isdigit() for p in settings.models.glob("*/*")):
        print(
            f"latentserve serve: no models in {settings.models}; train one first, e.g. "
            f"latentserve train ae --data digits --name digits-ae --models {settings.models}",
            file=sys.stderr,
        )
        return 2
    try:  # bound here, before any model loads: a port in use is a one-line error, not a crash at exit
        if settings.workers > 1:
            from service.workers import reuseport_socket, serve_workers

            return serve_workers(settings, overrides, reuseport_socket(settings.host, settings.port))
        listener = listening_socket(settings.host, settings.port)
    except OSError as e:
        print(
            f"latentserve serve: cannot listen on {settings.host}:{settings.port}: {e.strerror or e}", file=sys.stderr
        )
        return 2
    return run_server(settings, sockets=[listener])


def listening_socket(host: str, port: int) -> socket.socket:
    """The TCP socket uvicorn would open (SO_REUSEADDR, backlog 2048), bound and listening."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def run_server(settings: Settings, sockets: list | None = None) -> int:
    """Build the app and serve it until a stop signal (one process; `sockets`: a supervisor's)."""
    import uvicorn

    from service.app import create_app
    from service.connections import protocol_class
    from service.errors import StartupError
    from service.lifecycle import Server

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except StartupError as e:
        print(f"latentserve serve: cannot start: {e}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info(
        "serving %s on http://%s:%s (%s on %s)",
        settings.models,
        settings.host,
        settings.port,
        settings.runtime,
        settings.device,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]  # a float: asyncio.wait_for
        http=protocol_class(settings.header_timeout_s),
    )
    Server(config, app.state.lifecycle, app.state.repository, settings.shutdown_delay_s).run(sockets=sockets)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m service [serve] [flags]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return serve(argv[1:] if argv[:1] == ["serve"] else argv)


if __name__ == "__main__":
    sys.exit(main())
