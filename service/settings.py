"""The service's one configuration class: defaults <- `LATENTSERVE_*` environment <- CLI flags.

Validated when constructed, so a bad value stops the service before it binds a port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1 << 20


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LATENTSERVE_", extra="forbid", frozen=True)

    models: Path = Path("model_repository")  # same default as `latentserve train --models`
    # Loopback by default: exposing the port is a deliberate choice (the container sets 0.0.0.0).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0 asks the OS for a free port
    runtime: Literal["onnx", "torchscript"] = "onnx"
    device: Literal["cpu", "cuda"] = "cpu"
    max_rows: int = Field(10_000, ge=1)  # rows per request (inputs, latents, n)
    max_body_bytes: int = Field(16 * MiB, ge=1024)
    # One intra-op thread per worker: the default graphs are tiny, and extra threads
    # only contend with the event loop; raise it for wide models on many cores.
    threads: int = Field(1, ge=1, le=256)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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
