"""One error hierarchy for the service: each class carries its HTTP status code.

The runtime raises these (it knows nothing of HTTP beyond the number); `app.py` turns
every one of them into a `{"error": "..."}` body. Messages name what was expected and
what was received, so that a client can fix its request without reading the code.

Status codes (documented in the README and in the OpenAPI responses):
- 422 `InvalidInput`: the body is not JSON, or its content is wrong (shape, type, value).
- 404 `ModelNotFound`: unknown model name or version; the message lists what is available.
- 400 `NotSupported`: a well-formed request that this model's kind cannot serve.
- 413 `PayloadTooLarge`: the body is over the configured limit, which the message states.
- 503 `ModelNotReady` (with `Retry-After`): the model is still loading.
- 503 `ModelFailed`: the model was refused at load (bad hash, bad manifest); fixing the
  artifact and reloading (or restarting) is the remedy, so no `Retry-After`.

Answered by the middleware before any route runs, with the same body (service/limits.py,
service/auth.py, service/middleware.py): 401 API key missing or wrong, 408 body too slow,
413 body too large, 503 too many requests in flight (`Retry-After`), 504 over the time
budget. `POST /admin/reload` answers 409 when it refused a version (service/admin.py).
"""

from __future__ import annotations

from artifact.errors import BackendUnavailable, InvalidInput, LatentserveError, NotSupported

# The predictor's errors (artifact/errors.py) are the service's: one hierarchy, one handler.
ServiceError = LatentserveError
StartupError = BackendUnavailable  # the service cannot start at all (bad settings, missing backend, no CUDA)

__all__ = [
    "InvalidInput",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotReady",
    "NotSupported",
    "PayloadTooLarge",
    "ServiceError",
    "StartupError",
]


class ModelNotFound(ServiceError):
    status = 404


class PayloadTooLarge(ServiceError):
    status = 413


class ModelNotReady(ServiceError):
    status = 503
    retry_after_s = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelFailed(ServiceError):
    status = 503
