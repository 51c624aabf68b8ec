"""The errors a predictor raises, each with the HTTP status a transport should answer with.

The contract layer knows nothing of HTTP beyond that number (MLServer's pattern): the service's
handlers turn every `LatentserveError` into a `{"error": "..."}` body with its status; other
callers (the evaluation command, the Python API) read the message.
"""

from __future__ import annotations


class LatentserveError(Exception):
    """Base class: `status` is the HTTP status code, `headers` any extra response headers."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(LatentserveError):
    """The rows, latents or options are wrong (shape, type, value): 422."""

    status = 422


class NotSupported(LatentserveError):
    """A well-formed request that this model's kind cannot serve: 400."""

    status = 400


class ArtifactError(ValueError):
    """An artifact folder that cannot be served: missing or tampered files, an invalid manifest."""


class BackendUnavailable(Exception):
    """The graph runtime cannot run as asked (CUDA requested, not there; torch missing)."""
