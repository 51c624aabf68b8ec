"""Application wiring: settings -> backend -> repository -> FastAPI app. No logic of its own."""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.middleware.cors import CORSMiddleware

from service import admin, handlers, oip, openapi, ui
from service.auth import ApiKey
from service.batching import Batching, Inference
from service.lifecycle import Lifecycle
from service.limits import Admission
from service.middleware import BodyLimit, Metrics
from service.repository import ModelRepository
from service.routes import DirectDispatch, router
from service.settings import Settings

DESCRIPTION = """\
Serves autoencoders (ae), regularised autoencoders (rae), variational autoencoders (vae)
and GANs trained offline by `latentserve train`. Clients send and receive raw feature
values; each model's preprocessing is applied inside the service.

Errors always have the body `{"error": "..."}`: 422 invalid input, 404 unknown model or
version, 400 an endpoint the model's kind cannot serve, 401 API key missing or wrong (when
one is set), 408 body too slow, 413 body too large, 503 busy or model not ready (with
Retry-After) or refused at load, 504 over the time budget.
"""


def _version() -> str:
    try:
        return version("latentserve")
    except PackageNotFoundError:
        return "0+unknown"


def _load_and_freeze(repository: ModelRepository) -> None:
    repository.load_all()
    # What start-up built (modules, app, models) lives as long as the process: frozen, it is no
    # longer walked by every full collection (~40 ms here, a p99 outlier each time).
    gc.freeze()


def create_app(settings: Settings, repository: ModelRepository | None = None) -> FastAPI:
    """Build the app; models load in the background after start-up unless `repository` is loaded.

    Raises StartupError when the backend cannot run as asked (e.g. CUDA requested, not there).
    """
    if repository is None:
        repository = ModelRepository.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in a thread so that /healthz answers and /readyz says "loading" meanwhile.
        if not repository.loaded:
            threading.Thread(target=_load_and_freeze, args=(repository,), name="model-loader", daemon=True).start()
        yield
        app.state.inference.close()

    app = FastAPI(
        title="latentserve",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=handlers.FastJSONResponse,
        docs_url=None,  # FastAPI's pages load from a CDN: service/ui/docs.py serves offline ones
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.repository = repository
    app.state.lifecycle = Lifecycle()
    app.state.metrics = CollectorRegistry()  # one per app: tests build many apps in one process
    app.state.inference = Inference(settings.inference_threads, settings.inline_budget_ms / 1000)
    app.state.batching = Batching(
        settings.batching, settings.max_batch_rows, settings.max_delay_us, app.state.metrics, app.state.inference
    )
    handlers.install(app)
    app.include_router(router)
    app.include_router(oip.router)  # the Open Inference Protocol (KServe v2) on the same port
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    if key is not None:  # no key, no admin endpoints (404)
        app.include_router(admin.router)
    openapi.install(app, auth=key is not None)
    ui.install(app)  # /ui, /docs, /redoc
    # Each add_middleware wraps the ones before: a request meets them from the last added to the first.
    app.add_middleware(DirectDispatch, routes=router.routes, handlers=app.exception_handlers)  # innermost
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        Admission,
        max_in_flight=settings.max_concurrency,
        budget_s=settings.request_timeout_s,
        lifecycle=app.state.lifecycle,
        registry=app.state.metrics,
    )
    if key is not None:  # before admission: requests without the key take no slot
        app.add_middleware(ApiKey, key=key)
    if settings.cors_origins:  # outside auth: preflights carry no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    routes = [*router.routes, *oip.router.routes, *(admin.router.routes if key is not None else [])]
    paths = frozenset(getattr(r, "path", "") for r in routes)
    app.add_middleware(Metrics, registry=app.state.metrics, paths=paths)  # outermost: counts 401/413/503s too
    return app


def from_environment() -> FastAPI:
    """Settings from LATENTSERVE_* only: for `uvicorn --factory service.app:from_environment --workers N`."""
    return create_app(Settings())  # type: ignore[call-arg]  # every field from the environment or its default
