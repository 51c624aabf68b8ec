"""The Open Inference Protocol (KServe v2) REST routes, beside the native ones on the same app and port.

GET /v2, /v2/health/live, /v2/health/ready; GET /v2/models/{m}[/versions/{v}] (metadata) and
.../ready; POST .../infer, JSON or binary bodies (service/oip_codec.py). Each OIP model is an
operation of a latentserve model (service/oip_models.py). Errors are `{"error": "..."}`: 400 a bad
request or tensor, 404 an unknown model or version, 503 loading or refused at load, 413 over a
size limit. The app's middleware (limits, API key, metrics) wraps these routes as any other; the
two health routes are probes, exempt like /healthz.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from artifact.manifest import VERSION_PATTERN
from service.errors import ModelFailed, ModelNotFound, ModelNotReady
from service.handlers import FastJSONResponse
from service.oip_codec import HEADER, BadTensor, decode_request, decompress, encode_response
from service.oip_models import MAIN_OPERATION, OPERATIONS, run, signature

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
EXTENSIONS = ["binary_tensor_data"]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a valid inference request, or a tensor the model cannot take."},
    404: {"description": "Unknown model or version (the message lists them)."},
    413: {"description": "Body or rows over the limit (the message states it)."},
    503: {"description": "Model loading (Retry-After) or refused at load."},
}


def resolve(request: Request, name: str, version: str | None) -> tuple[Any, str]:
    """(the ready model runtime, its operation) for OIP model `name`; 404 naming what exists."""
    repository = request.app.state.repository
    v = _version(name, version)
    names = _model_names(repository)
    if name in names:
        model = repository.get(name, v)
        operation = MAIN_OPERATION[model.manifest.kind]
    else:
        base, _, operation = name.rpartition(".")
        if base not in names or operation not in OPERATIONS:
            raise ModelNotFound(
                f"no model named {_short(name)}: OIP models are <name>.<operation> (operation one of "
                f"{', '.join(OPERATIONS)}) or a bare <name>; names: {', '.join(names) or 'none'}"
            )
        model = repository.get(base, v)
        if operation not in model.manifest.capabilities:
            served = ", ".join(f"{base}.{c}" for c in model.manifest.capabilities)
            raise ModelNotFound(f"{base!r} is a {model.manifest.kind}, which has no {operation}; it serves {served}")
    request.state.model = model.name  # the metrics label: a name that exists, never raw client input
    return model, operation


def _version(name: str, version: str | None) -> int | None:
    if version is None:
        return None
    if not VERSION_PATTERN.match(version):
        raise ModelNotFound(f"model {_short(name)} has no version {_short(version)}: versions are positive integers")
    return int(version)


def _model_names(repository: Any) -> list[str]:
    return list(repository.models)


def _versions(repository: Any, name: str) -> list[str]:
    return [str(v) for v in repository.serving().get(name, [])]


def _short(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "…")


# ----- server ----------------------------------------------------------------------------------
@router.get("", summary="Server metadata")
@router.get("/", include_in_schema=False)
async def server_metadata(request: Request) -> Response:
    """The server's name, version and protocol extensions."""
    return FastJSONResponse({"name": "latentserve", "version": request.app.version, "extensions": EXTENSIONS})


@router.get("/health/live", summary="Server live")
async def live() -> Response:
    """The process is alive (a probe: no API key, no admission limit)."""
    return FastJSONResponse({"live": True})


@router.get("/health/ready", summary="Server ready", responses={503: _ERRORS[503]})
async def ready(request: Request) -> Response:
    """200 once every model is loaded; 503 while loading, stopping, or when a model was refused at start."""
    if request.app.state.lifecycle.stopping:
        return FastJSONResponse({"ready": False, "error": "not ready: shutting down"}, status_code=503)
    repository = request.app.state.repository
    problems = repository.problems()
    if not problems:
        return FastJSONResponse({"ready": True})
    headers = {"Retry-After": "1"} if repository.loading else None
    body = {"ready": False, "error": "not ready: " + "; ".join(problems)}
    return FastJSONResponse(body, status_code=503, headers=headers)


# ----- models ----------------------------------------------------------------------------------
@router.get("/models/{model_name}", summary="Model metadata", responses=_ERRORS)
@router.get("/models/{model_name}/versions/{model_version}", summary="Model metadata", responses=_ERRORS)
async def model_metadata(request: Request, model_name: str, model_version: str | None = None) -> Response:
    """Inputs and outputs (datatype, shape with -1 for the batch axis), platform and versions."""
    model, operation = resolve(request, model_name, model_version)
    inputs, outputs = signature(model.manifest, operation)
    body = {
        "name": model_name,
        "versions": _versions(request.app.state.repository, model.name),
        "platform": f"latentserve_{model.backend.runtime}",
        "inputs": [t.describe() for t in inputs],
        "outputs": [t.describe() for t in outputs],
        "parameters": {
            "model": model.name,
            "version": model.version,
            "kind": model.manifest.kind,
            "operation": operation,
            "max_batch_size": model.max_rows,
        },
    }
    return FastJSONResponse(body)


@router.get("/models/{model_name}/ready", summary="Model ready", responses=_ERRORS)
@router.get("/models/{model_name}/versions/{model_version}/ready", summary="Model ready", responses=_ERRORS)
async def model_ready(request: Request, model_name: str, model_version: str | None = None) -> Response:
    """200 when the model (version) is loaded; 503 while it loads or when it was refused; 404 unknown."""
    try:
        resolve(request, model_name, model_version)
    except (ModelNotReady, ModelFailed) as e:
        body = {"name": model_name, "ready": False, "error": e.message}
        return FastJSONResponse(body, status_code=503, headers=e.headers or None)
    return FastJSONResponse({"name": model_name, "ready": True})


@router.post("/models/{model_name}/infer", summary="Inference", responses=_ERRORS)
@router.post("/models/{model_name}/versions/{model_version}/infer", summary="Inference", responses=_ERRORS)
async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
    """An inference request, JSON or with binary tensors; no Content-Type needed."""
    model, operation = resolve(request, model_name, model_version)
    body = decompress(
        await request.body(), request.headers.get("content-encoding"), request.app.state.settings.max_body_bytes
    )
    inference = decode_request(body, request.headers.get(HEADER))
    _, declared = signature(model.manifest, operation)
    names = [t.name for t in declared]
    if inference.outputs is not None:  # checked before the model runs
        unknown = [o.name for o in inference.outputs if o.name not in names]
        if unknown:
            raise BadTensor(f"unknown output(s) {', '.join(map(repr, unknown))}; {model_name} gives {', '.join(names)}")
        if len({o.name for o in inference.outputs}) != len(inference.outputs):
            raise BadTensor(f"outputs names an output more than once: {[o.name for o in inference.outputs]}")
    results, parameters = await run(request.app.state.batching, model, operation, inference)
    if inference.outputs is not None:
        chosen = [(o.name, o.binary) for o in inference.outputs]  # contributions asked for: explained (run)
    else:
        chosen = [(name, None) for name in names if name in results]
    header: dict[str, Any] = {"model_name": model_name, "model_version": str(model.version)}
    if inference.id is not None:
        header["id"] = inference.id
    if parameters:
        header["parameters"] = parameters
    outputs = [(name, results[name], inference.binary_output if b is None else b) for name, b in chosen]
    content, headers = encode_response(header, outputs)
    return Response(content, headers=headers)
