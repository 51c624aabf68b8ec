"""Ray Serve: the same FastAPI app (`service.app.create_app`) in every replica, behind Ray's HTTP proxy.

    serve run service.ray_serve:build_app models=DIR [replicas=N] [key=value ...]
    serve deploy deploy/ray/serve_config.yaml

One deployment, `LatentServe` (named `latentserve`), wraps the whole app: every endpoint, with
the same limits, errors and row micro-batcher (per replica: Ray spreads requests, each replica
batches the ones it holds). Ray's own `@serve.batch` is not used.

In front of it, Ray's proxy reaches a thin ingress, `Gateway` (named `gateway`, no models, no
CPU reserved): it hands each HTTP request whole to a `latentserve` replica through a
`DeploymentHandle` and sends back the replica's status, headers and body unchanged. Its one job
is what Ray's proxy does not do: when the replica dies under a request (killed, node lost, out of
memory), Ray's proxy would answer a plain 500; the gateway sends the request again to another
replica (every endpoint is safe to repeat: inference has no side effects, a reload is
idempotent), and answers 503 with Retry-After only if that fails too. With `gateway=false` the
proxy reaches the `latentserve` replicas directly (`LatentServe.__call__`): one hop fewer, no retry.

- Each replica loads the repository in its constructor, so Ray routes to it only once its
  models are warm; its initial health check, and one every HEALTH_CHECK_PERIOD_S, raises while
  the replica cannot serve everything it should (models folder missing on this node, a version
  refused at start), so Ray keeps traffic off it and replaces it.
- A new `generation` in the deployment's user_config (a serve config's
  `deployments: [{name: latentserve, user_config: {generation: N}}]`) makes every replica reload the
  repository in place (`ModelRepository.reload`: load aside, then swap), without a restart.
  A user_config that a running replica cannot take is logged with its reason and ignored:
  the replica keeps serving its models (Ray would otherwise replace the replica, and a new one
  would fail the same way).
- Autoscaling on ongoing requests (service/ray_config.py has the defaults), or `replicas=N`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any, TypedDict

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray is imported: no usage reports

try:
    from ray import serve
    from ray.exceptions import RayActorError
    from ray.serve import Application
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
    from ray.serve.handle import DeploymentHandle
except ImportError as e:  # pragma: no cover - exercised by tests/test_ray_serve.py in a subprocess
    raise ImportError("Ray Serve is not installed: pip install 'latentserve[ray]'") from e

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from service.app import create_app
from service.errors import StartupError
from service.ray_config import HEALTH_CHECK_PERIOD_S, HEALTH_CHECK_TIMEOUT_S, RayArgs, UserConfig, describe, parse_args
from service.repository import ModelRepository
from service.settings import Settings

log = logging.getLogger(__name__)

RETRIES = 2  # after the first try: a request whose replica died is sent again, at most this often
RETRY_DELAY_S = 0.05  # times the attempt: Ray's router needs a moment to drop a dead replica
RETRY_AFTER_S = 1  # the Retry-After of the 503 sent when every try lost its replica


class Forwarded(TypedDict):
    """One HTTP request, as the gateway hands it to a `latentserve` replica."""

    method: str
    path: str
    raw_path: bytes
    root_path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    body: bytes


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, raw headers, body


async def call_asgi(app: ASGIApp, request: Forwarded) -> Answer:
    """Run one buffered HTTP request through an ASGI app in this process; collect its whole answer."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "method": request["method"],
        "path": request["path"],
        "raw_path": request["raw_path"],
        "root_path": request["root_path"],
        "query_string": request["query_string"],
        "headers": [(bytes(k), bytes(v)) for k, v in request["headers"]],
        "client": tuple(request["client"]) if request["client"] else None,
        "state": {},
    }
    sent = False
    status, headers, chunks = 500, [], []
    answered = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": request["body"], "more_body": False}
        await answered.wait()  # a disconnect only after the answer, as a client that waits for it
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    answered.set()
    return status, headers, b"".join(chunks)


def open_repository(settings: Settings) -> ModelRepository:
    """The replica's models, loaded and warm before the replica reports healthy."""
    repository = ModelRepository.from_settings(settings)
    repository.load_all()
    return repository


def _unavailable(problem: str) -> ASGIApp:
    """The app of a replica that cannot serve: 503 with the reason (its health check fails first)."""

    async def refuse(request: Request) -> JSONResponse:
        return JSONResponse({"error": f"this replica cannot serve: {problem}"}, status_code=503)

    return Starlette(routes=[Route("/{path:path}", refuse, methods=["GET", "POST"])])


class LatentServe:
    """One replica: the latentserve app over this node's view of the model repository."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.node = socket.gethostname()
        self.generation: int | str | None = None  # set by the first reconfigure
        self.rejected: str | None = None  # the last user_config refused, and why
        self.problem: str | None = None
        self.settings: Settings | None = None
        self.repository: ModelRepository | None = None
        models = Path(str(settings.get("models")))
        if not models.is_dir():  # before Settings, whose message tells a local user to train a model
            self.problem = (
                f"the model repository {str(models)!r} does not exist on node {self.node}: every node must "
                "see it at the same path (a shared volume, or a copy on each node)"
            )
            log.error("%s", self.problem)
            return
        try:
            self.settings = Settings(**settings)
            logging.getLogger("service").setLevel(self.settings.log_level.upper())
            self.repository = open_repository(self.settings)
        except ValidationError as e:
            self.problem = f"invalid settings on node {self.node}: {describe(e)}"
        except StartupError as e:
            self.problem = f"cannot start on node {self.node}: {e}"
        except OSError as e:
            self.problem = f"cannot read the model repository {settings.get('models')!r} on node {self.node}: {e}"
        if self.problem:
            log.error("%s", self.problem)
        if self.settings is None or self.repository is None:
            self.app: ASGIApp = _unavailable(self.problem or "not started")
        else:
            self.app = create_app(self.settings, repository=self.repository)

    async def forward(self, request: Forwarded) -> Answer:
        """One HTTP request from the gateway, served by this replica's app."""
        return await call_asgi(self.app, request)

    async def __call__(self, request: Request) -> Response:
        """One HTTP request straight from Ray's proxy (the application built with gateway=false)."""
        limit = self.settings.max_body_bytes if self.settings is not None else 0  # else: the 503 app
        return answer_response(await call_asgi(self.app, await forwarded_from(request, limit)))

    def __del__(self) -> None:  # Ray's graceful shutdown: stop the inference threads
        app = getattr(self, "app", None)
        state = getattr(app, "state", None)
        inference = getattr(state, "inference", None) if state is not None else None
        if inference is not None:
            inference.close()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        try:
            config = UserConfig.model_validate(user_config)
        except ValidationError as e:
            reason = f"user_config {user_config!r} refused: {describe(e)}"
            if self.generation is None:  # a new replica: no models serving yet, so fail its start
                raise ValueError(reason) from None
            self.rejected = f"{reason}; generation {self.generation!r} keeps serving"
            log.error("%s", self.rejected)
            return
        first, self.generation = self.generation is None, config.generation
        self.rejected = None
        if first or self.repository is None:
            return  # the constructor has just loaded the repository
        report = await asyncio.to_thread(self.repository.reload)  # requests keep being served meanwhile
        log.info("generation %r: %s", config.generation, report.summary())

    def check_health(self) -> None:
        """Raise (Ray stops routing here and replaces the replica) unless every model serves."""
        if self.problem:
            raise RuntimeError(self.problem)
        assert self.settings is not None and self.repository is not None
        if not self.settings.models.is_dir():
            raise RuntimeError(
                f"the model repository {str(self.settings.models)!r} is gone on node {self.node}: "
                "every node must mount it at the same path"
            )
        problems = self.repository.problems()
        if problems:
            raise RuntimeError(f"not ready on node {self.node}: " + "; ".join(problems))

    def status(self) -> dict[str, Any]:
        """What this replica serves (for `DeploymentHandle` callers and the tests)."""
        repository = self.repository
        return {
            "node": self.node,
            "pid": os.getpid(),
            "generation": self.generation,
            "rejected": self.rejected,
            "problem": self.problem,
            "serving": repository.serving() if repository is not None else {},
        }


class Gateway:
    """The ingress: each HTTP request, whole, to a `latentserve` replica, sent again if that replica dies."""

    def __init__(self, model: DeploymentHandle, max_body_bytes: int) -> None:
        self.model = model
        self.max_body_bytes = max_body_bytes

    async def __call__(self, request: Request) -> Response:
        forwarded = await forwarded_from(request, self.max_body_bytes)
        lost: list[str] = []
        for attempt in range(RETRIES + 1):
            try:
                status, headers, content = await self.model.forward.remote(forwarded)
            except RayActorError as e:  # the replica died (or became unreachable) under this request
                lost.append(type(e).__name__)
                log.warning(
                    "%s %s: its replica was lost (%s); try %d of %d",
                    request.method,
                    request.url.path,
                    type(e).__name__,
                    attempt + 1,
                    RETRIES + 1,
                )
                await asyncio.sleep(RETRY_DELAY_S * (attempt + 1))
                continue
            except (BackPressureError, DeploymentUnavailableError) as e:
                return unavailable(f"no latentserve replica can take the request now: {e}")
            return answer_response((status, headers, content))
        return unavailable(
            f"the latentserve replica serving this request was lost, {len(lost)} times ({', '.join(lost)})"
        )


async def forwarded_from(request: Request, max_body_bytes: int) -> Forwarded:
    """The HTTP request, whole, as a replica's `forward` takes it."""
    body = bytearray()
    async for chunk in request.stream():  # at most one byte over the limit: the replica answers the 413
        body += chunk
        if len(body) > max_body_bytes:
            break
    return Forwarded(
        method=request.method,
        path=request.scope["path"],
        raw_path=request.scope.get("raw_path") or request.scope["path"].encode(),
        root_path=request.scope.get("root_path", ""),
        query_string=request.scope.get("query_string", b""),
        headers=list(request.scope["headers"]),
        client=tuple(request.client) if request.client else None,  # type: ignore[typeddict-item]
        body=bytes(body),
    )


def answer_response(answer: Answer) -> Response:
    status, headers, content = answer
    response = Response(content, status_code=status)
    response.raw_headers = headers
    return response


def unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"error": f"{reason}; retry"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def deployment(args: RayArgs, user_config: dict[str, Any] | None = None) -> Application:
    """The bound application for validated args; `user_config` replaces the one the args give."""
    settings = Settings(**{**args.settings, "models": "/"})  # the drain and limit values, as the replicas see them
    options: dict[str, Any] = {
        "name": "latentserve",
        "user_config": args.user_config if user_config is None else user_config,
        "max_ongoing_requests": settings.max_concurrency,  # past it Ray queues at the proxy, as admission would refuse
        "ray_actor_options": {"num_cpus": args.replica_cpus},
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
        "graceful_shutdown_wait_loop_s": max(settings.shutdown_delay_s, 0.1),
        "graceful_shutdown_timeout_s": max(settings.shutdown_grace_s, 0.1),
    }
    gateway: dict[str, Any] = {
        "name": "gateway",
        "max_ongoing_requests": settings.max_concurrency,
        "ray_actor_options": {"num_cpus": 0},  # it waits on the replicas; it reserves no CPU
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,  # a dead gateway is replaced as soon as a replica
    }
    autoscaling = args.autoscaling()
    # as many gateways as replicas: one lost costs no more than one replica
    for scaled in (options, gateway):
        if autoscaling is None:
            scaled["num_replicas"] = args.replicas
        else:
            scaled["autoscaling_config"] = autoscaling
    model = serve.deployment(**options)(LatentServe).bind(args.settings_overrides())
    if not args.gateway:
        return model
    return serve.deployment(**gateway)(Gateway).bind(model, settings.max_body_bytes)


def build_app(args: dict[str, Any]) -> Application:
    """`serve run service.ray_serve:build_app models=DIR ...` and serve configs' import_path."""
    return deployment(parse_args(args))
