"""HTTP routes: parse, pick the model, call the runtime, reply. No model logic lives here."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from service.handlers import FastJSONResponse
from service.repository import ModelRepository
from service.runtime import ModelRuntime
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
    ModelRequest,
    ModelsResponse,
    ReadyResponse,
    ReconstructRequest,
    ReconstructResponse,
    SampleRequest,
    SampleResponse,
)


def get_repository(request: Request) -> ModelRepository:
    return request.app.state.repository


RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The model's kind cannot serve this endpoint."},
    404: {"model": ErrorResponse, "description": "Unknown model or version (the message lists them)."},
    413: {"model": ErrorResponse, "description": "Body over the size limit (the message states it)."},
    422: {"model": ErrorResponse, "description": "Invalid body: the message names the field and the problem."},
    503: {"model": ErrorResponse, "description": "Model loading (Retry-After) or refused at load."},
}


class OrjsonRequest(Request):
    """Request bodies parsed by orjson: several times faster than the json module on long number
    lists, strict JSON (no NaN), a depth limit; its errors still reach FastAPI's validation path."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return orjson_handler


router = APIRouter(route_class=OrjsonRoute)


def _use(request: Request, repository: ModelRepository, body: ModelRequest) -> ModelRuntime:
    model = repository.get(body.model, body.version)
    request.state.model = model.name  # the metrics label: a name that exists, never raw client input
    return model


def _reply(model: ModelRuntime, **fields: Any) -> FastJSONResponse:
    return FastJSONResponse({"model": model.name, "version": model.version, **fields})


@router.post("/encode", response_model=EncodeResponse, responses=_ERRORS, tags=["models"])
async def encode(
    body: Annotated[EncodeRequest, Body(openapi_examples=ENCODE_EXAMPLES)],
    repository: RepositoryDep,
    request: Request,
) -> Response:
    """Map rows of raw features to latent vectors; a vae also returns mu and logvar."""
    model = _use(request, repository, body)
    return _reply(model, **model.encode(body.inputs))


@router.post("/reconstruct", response_model=ReconstructResponse, responses=_ERRORS, tags=["models"])
async def reconstruct(
    body: Annotated[ReconstructRequest, Body(openapi_examples=RECONSTRUCT_EXAMPLES)],
    repository: RepositoryDep,
    request: Request,
) -> Response:
    """Encode then decode rows; reconstructions come back in the inputs' raw units."""
    model = _use(request, repository, body)
    return _reply(model, reconstructions=model.reconstruct(body.inputs))


@router.post("/sample", response_model=SampleResponse, responses=_ERRORS, tags=["models"])
async def sample(
    body: Annotated[SampleRequest, Body(openapi_examples=SAMPLE_EXAMPLES)],
    repository: RepositoryDep,
    request: Request,
) -> Response:
    """Draw n samples (reproducible by seed), or decode the given latents."""
    model = _use(request, repository, body)
    return _reply(model, samples=model.sample(body.n, body.seed, body.temperature, body.latents))


@router.post("/anomaly-score", response_model=AnomalyScoreResponse, responses=_ERRORS, tags=["models"])
async def anomaly_score(
    body: Annotated[AnomalyScoreRequest, Body(openapi_examples=ANOMALY_SCORE_EXAMPLES)],
    repository: RepositoryDep,
    request: Request,
) -> Response:
    """Score rows: higher is more anomalous; with the threshold, decisions and percentiles."""
    model = _use(request, repository, body)
    result = model.anomaly_score(body.inputs, body.explain)
    extra = {"contributions": result.contributions} if result.contributions is not None else {}
    return _reply(
        model,
        scores=result.scores,
        threshold=result.threshold,
        is_anomaly=result.is_anomaly,
        percentiles=result.percentiles,
        **extra,
    )


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
