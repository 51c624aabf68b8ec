"""The service's one configuration class: defaults <- `LATENTSERVE_*` environment <- CLI flags.

Validated when constructed, so a bad value stops the service before it binds a port.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1 << 20
MIN_API_KEY_CHARS = 16
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")  # scheme://host[:port], no path


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected API key must not appear in an error message.
    model_config = SettingsConfigDict(env_prefix="LATENTSERVE_", extra="forbid", frozen=True, hide_input_in_errors=True)

    models: Path = Path("model_repository")  # same default as `latentserve train --models`
    # Loopback by default: exposing the port is a deliberate choice (the container sets 0.0.0.0).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0 asks the OS for a free port
    runtime: Literal["onnx", "torchscript"] = "onnx"
    # Processes on the one port (service/workers.py): each loads every model and drains, reloads and
    # times out headers as one process would; one reload reaches them all.
    workers: int = Field(1, ge=1, le=64)
    device: Literal["cpu", "cuda"] = "cpu"
    max_rows: int = Field(10_000, ge=1)  # rows per request (inputs, latents, n)
    max_body_bytes: int = Field(16 * MiB, ge=1024)
    # One intra-op thread per worker: the default graphs are tiny, and extra threads
    # only contend with the event loop; raise it for wide models on many cores.
    threads: int = Field(1, ge=1, le=256)
    # Micro-batching (service/batching.py): concurrent requests for one model, endpoint and options
    # share one runtime call of at most max_batch_rows rows, flushed at the event loop's next turn
    # or after max_delay_us (0: nothing waits for company; uvloop's timers count whole milliseconds,
    # so under 500 µs is the next turn). On: 1.5x the one-row requests/s at 8-32 concurrent clients,
    # 7 % fewer with one client (bench/serve.py, README "Performance").
    # Predictor calls run in a pool of this many threads, off the event loop (service/batching.py), so
    # that probes and time budgets are answered while graphs run; one per core by default.
    inference_threads: int = Field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)), ge=1, le=256)
    # A call measured to take under this many ms runs on the loop: cheaper there than the hop to a thread
    # (service/batching.py, Inference); 0: every call in the pool.
    inline_budget_ms: float = Field(2.0, ge=0, le=50)
    batching: bool = True
    max_batch_rows: int = Field(1024, ge=1)
    max_delay_us: int = Field(0, ge=0, le=1_000_000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Limits (service/limits.py). Worst-case buffered bodies: max_concurrency * max_body_bytes (1 GiB).
    max_concurrency: int = Field(64, ge=1, le=100_000)  # requests in flight; past it 503 + Retry-After
    request_timeout_s: float = Field(30.0, gt=0, le=3600)  # per request, until its response starts; then 504
    header_timeout_s: float = Field(10.0, gt=0, le=300)  # a request's line + headers; then the socket closes
    # SIGTERM: /readyz says 503 and requests are still served for shutdown_delay_s (so that a load
    # balancer stops sending new ones), then the port closes and requests in flight get up to
    # shutdown_grace_s. Keep the sum under the orchestrator's kill timeout (docker stop: 10 s).
    shutdown_delay_s: float = Field(1.0, ge=0, le=300)
    shutdown_grace_s: float = Field(8.0, ge=0, le=3600)
    # Security (service/auth.py): unset = no authentication and no /admin endpoints.
    api_key: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = []  # comma-separated; empty = no CORS headers at all

    @field_validator("models")
    @classmethod
    def _models_is_a_folder(cls, v: Path) -> Path:
        if not v.is_dir():
            raise ValueError(
                f"model repository {str(v)!r} is not a folder; train a model first "
                f"(latentserve train ae --data digits --name digits-ae --models {v}) or point "
                f"--models / LATENTSERVE_MODELS at an existing repository"
            )
        return v

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        # Never echo the value: these messages are printed.
        if v is None:
            return v
        key = v.get_secret_value()
        if len(key) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"the API key is set but shorter than {MIN_API_KEY_CHARS} characters; use a long random "
                f"value (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'), or unset it"
            )
        if not all(33 <= ord(c) <= 126 for c in key):
            raise ValueError("the API key must be printable ASCII without spaces: it travels in an HTTP header")
        return v

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: object) -> object:
        origins = [o.strip() for o in v.split(",") if o.strip()] if isinstance(v, str) else v
        for origin in origins if isinstance(origins, list) else []:
            if origin != "*" and not ORIGIN.match(str(origin)):
                raise ValueError(
                    f"CORS origin {origin!r} is not '*' or scheme://host[:port] (e.g. https://app.example.com)"
                )
        return origins
