"""HTTP routes: parse, pick the model, call the runtime, reply. No model logic lives here.

The model endpoints take the bare Request: `service.payloads` reads their bodies, JSON or .npy,
against the same schemas, `service.batching` runs the runtime call, and `DirectDispatch` calls
them without the router's per-request layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from artifact.predictor import Predictor
from service import payloads, records
from service.handlers import FastJSONResponse
from service.repository import ModelRepository
from service.schemas import (
    ANOMALY_SCORE_EXAMPLES,
    ENCODE_EXAMPLES,
    RECONSTRUCT_EXAMPLES,
    SAMPLE_EXAMPLES,
    AnomalyScoreRequest,
    AnomalyScoreResponse,
    EncodeRequest,
    EncodeResponse,
    ErrorResponse,
    ModelInfo,
    ModelsResponse,
    ReadyResponse,
    ReconstructRequest,
    ReconstructResponse,
    SampleRequest,
    SampleResponse,
)


async def get_repository(request: Request) -> ModelRepository:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hop per request.
    return request.app.state.repository


RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The model's kind cannot serve this endpoint."},
    404: {"model": ErrorResponse, "description": "Unknown model or version (the message lists them)."},
    413: {"model": ErrorResponse, "description": "Body over the size limit (the message states it)."},
    422: {"model": ErrorResponse, "description": "Invalid body: the message names the field and the problem."},
    503: {"model": ErrorResponse, "description": "Model loading (Retry-After) or refused at load."},
}


class DirectDispatch:
    """Pure ASGI, innermost of the app's middleware: POST to a model endpoint calls it directly.

    Starlette's router and FastAPI's per-route layers (exception wrapper, exit stacks, dependency
    solving) take about a third of a one-row request's time on the loop; past them, a one-row
    /encode runs about 1.4x as many requests per second (bench/serve_results.md). Every
    middleware still sees these requests; errors go to the app's exception handlers, as they
    would from the router. Anything else (other methods, other paths) passes through to FastAPI,
    where the same endpoints are declared, with their OpenAPI documentation.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], handlers: dict[Any, Callable]) -> None:
        self.app = app
        self.endpoints = {r.path: r for r in routes if isinstance(r, APIRoute) and r.path in MODEL_ENDPOINTS}
        self.handlers = handlers  # the app's, filled by handlers.install

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.endpoints.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # the metrics' endpoint label, as the router would set it
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = next(self.handlers[c] for c in type(exc).__mro__ if c in self.handlers)
            response = await handler(request, exc)
        await response(scope, receive, send)


router = APIRouter()
MODEL_ENDPOINTS: set[str] = set()  # served by DirectDispatch


def _model_endpoint(path: str, schema: type[BaseModel], response: type[BaseModel], examples: dict) -> Callable:
    """Register a model endpoint: a JSON body of `schema`, or an .npy body with query parameters."""
    options, field = payloads.PARTS[schema]
    query = "&".join(f"{name}=…" for name in options.model_fields)
    body = {
        "required": path != "/sample",
        "content": {
            "application/json": {"schema": schema.model_json_schema(), "examples": examples},
            payloads.NPY: {
                "schema": {"type": "string", "format": "binary"},
                # Not OpenAPI parameters: those would apply to JSON bodies too, which take every field in the body.
                "description": f"`{field}` as one .npy array (rows, values); the other fields as query "
                f"parameters ({query}), read only with this content type.",
            },
        },
    }
    ok = {"description": "JSON, or .npy with `Accept: application/x-npy`.", "content": {payloads.NPY: {}}}

    def register(endpoint: Callable) -> Callable:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=response,
            responses={200: ok, **_ERRORS},
            tags=["models"],
            openapi_extra={"requestBody": body},
        )
        MODEL_ENDPOINTS.add(path)
        return endpoint

    return register


def _use(request: Request, body: Any) -> Predictor:
    model = request.app.state.repository.get(body.model, body.version)
    request.state.model = model.name  # the metrics label: a name that exists, never raw client input
    return model


async def _run(request: Request, model: Predictor, endpoint: str, x: Any, **options: Any) -> Any:
    return await request.app.state.batching.run(model, endpoint, x, **options)


def _clipped(model: Predictor, x: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """Add `clipped` (per row, how many features the model clipped to its training range) when any were."""
    clipped = model.clipped(x)
    return fields if clipped is None else {**fields, "clipped": clipped}


@_model_endpoint("/encode", EncodeRequest, EncodeResponse, ENCODE_EXAMPLES)
async def encode(request: Request) -> Response:
    """Map rows of raw features to latent vectors; a vae also returns mu and logvar."""
    body, rows = await payloads.read(request, EncodeRequest)
    model = _use(request, body)
    x = model.inputs(records.rows_of(model, body, rows), "encode")
    return payloads.reply(request, model, _clipped(model, x, await _run(request, model, "encode", x)))


@_model_endpoint("/reconstruct", ReconstructRequest, ReconstructResponse, RECONSTRUCT_EXAMPLES)
async def reconstruct(request: Request) -> Response:
    """Encode then decode rows; reconstructions come back in the inputs' raw units."""
    body, rows = await payloads.read(request, ReconstructRequest)
    model = _use(request, body)
    x = model.inputs(records.rows_of(model, body, rows), "reconstruct")
    return payloads.reply(
        request, model, _clipped(model, x, {"reconstructions": await _run(request, model, "reconstruct", x)})
    )


@_model_endpoint("/sample", SampleRequest, SampleResponse, SAMPLE_EXAMPLES)
async def sample(request: Request) -> Response:
    """Draw n samples (reproducible by seed), or decode the given latents."""
    body, latents = await payloads.read(request, SampleRequest)
    model = _use(request, body)
    z = model.sample_latents(body.n, body.seed, body.temperature, latents)
    return payloads.reply(request, model, {"samples": await _run(request, model, "sample", z)})


@_model_endpoint("/anomaly-score", AnomalyScoreRequest, AnomalyScoreResponse, ANOMALY_SCORE_EXAMPLES)
async def anomaly_score(request: Request) -> Response:
    """Score rows: higher is more anomalous; with the threshold, decisions and percentiles."""
    body, rows = await payloads.read(request, AnomalyScoreRequest)
    model = _use(request, body)
    x = model.inputs(records.rows_of(model, body, rows), "anomaly-score", body.explain)
    result = await _run(request, model, "anomaly-score", x, explain=body.explain)
    fields = {
        "scores": result.scores,
        "threshold": result.threshold,
        "is_anomaly": result.is_anomaly,
        "percentiles": result.percentiles,
    }
    if result.contributions is not None:
        fields["contributions"] = result.contributions
    return payloads.reply(request, model, fields)


@router.get("/models", response_model=ModelsResponse, tags=["repository"])
async def list_models(repository: RepositoryDep) -> Response:
    """Every model with its versions, state and the public part of its manifest; folders ignored."""
    return FastJSONResponse({"models": repository.describe(), "ignored": repository.ignored})


@router.get("/models/{name}", response_model=ModelInfo, responses={404: _ERRORS[404]}, tags=["repository"])
async def get_model(name: str, repository: RepositoryDep) -> Response:
    """One model with its versions, state and the public part of its manifest."""
    return FastJSONResponse(repository.describe(name)[0])


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process is alive (it may still be loading models)."""
    return {"status": "alive"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}}, tags=["operations"])
async def readyz(repository: RepositoryDep, request: Request) -> Response:
    """200 once every model is loaded and warm; 503 while loading, stopping, or when a model was refused
    at start (versions refused by a reload are listed, but the previous ones keep serving)."""
    if request.app.state.lifecycle.stopping:
        return FastJSONResponse({"status": "stopping", "error": "not ready: shutting down"}, status_code=503)
    problems = repository.problems()
    extra = {k: v for k, v in (("refused", repository.refused()), ("ignored", repository.ignored)) if v}
    if not problems:
        return FastJSONResponse({"status": "ready", "models": repository.serving(), **extra})
    loading = repository.loading
    return FastJSONResponse(
        {"status": "loading" if loading else "failed", "error": "not ready: " + "; ".join(problems), **extra},
        status_code=503,
        headers={"Retry-After": "1"} if loading else None,
    )


@router.get("/metrics", tags=["operations"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: request counts and latencies by endpoint, model and status."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
