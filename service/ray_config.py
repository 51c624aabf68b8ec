"""What a Ray Serve deployment of latentserve is built from: `build_app` args and the replicas' user_config.

Kept apart from `service.ray_serve` so that the arguments can be checked without Ray installed
(`tests/test_deploy.py` checks those of deploy/ray/serve_config.yaml and deploy/kuberay/). The
args are what `serve run service.ray_serve:build_app key=value ...` or a serve config's
`applications[].args` give: the Ray keys below, and any `latentserve serve` setting by its
field name (`runtime`, `max_rows`, `batching`, ...). `host`, `port` and `api_key` are not args:
Ray's proxy owns the address (`http_options`), and a key belongs in each node's
`LATENTSERVE_API_KEY`, not in a config that `serve status` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.settings import Settings

# Autoscaling defaults (documented in docs/ray.md): one replica at rest, a second one when a
# replica holds more than 16 requests in flight. 16 keeps the row micro-batcher fed (it batches
# concurrent requests inside one replica) while the proxy still spreads load early.
MIN_REPLICAS = 1
MAX_REPLICAS = 2
TARGET_ONGOING_REQUESTS = 16.0
HEALTH_CHECK_PERIOD_S = 2.0  # Ray's default is 10 s: a broken replica would keep traffic longer
HEALTH_CHECK_TIMEOUT_S = 10.0
NOT_ARGS = {
    "host": "Ray's proxy owns the address: set http_options.host in the serve config",
    "port": "Ray's proxy owns the port: set http_options.port in the serve config",
    "api_key": "set LATENTSERVE_API_KEY in every node's environment instead",
}


class UserConfig(BaseModel):
    """A replica's user_config: a new `generation` reloads the model repository in place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generation: int | str = 0


class RayArgs(BaseModel):
    """`build_app`'s arguments, validated; `settings` are `latentserve serve` settings by field name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: Path  # the model repository: the same path on every node (a shared volume)
    replicas: int | None = Field(None, ge=1, le=1000)  # fixed; unset = autoscaling
    min_replicas: int = Field(MIN_REPLICAS, ge=0, le=1000)
    max_replicas: int = Field(MAX_REPLICAS, ge=1, le=1000)
    target_ongoing_requests: float = Field(TARGET_ONGOING_REQUESTS, gt=0)
    replica_cpus: float = Field(1.0, ge=0)  # Ray CPUs reserved per replica (one graph thread by default)
    generation: int | str = 0
    # Ray's proxy reaches the `gateway` deployment, which sends a request again when its replica
    # dies under it; False: the proxy reaches the replicas directly (one hop fewer, faster on small
    # requests; a request whose replica dies gets Ray's plain 500)
    gateway: bool = True
    settings: dict[str, Any] = {}

    @model_validator(mode="after")
    def _consistent(self) -> RayArgs:
        if self.replicas is None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self

    @property
    def user_config(self) -> dict[str, Any]:
        return UserConfig(generation=self.generation).model_dump()

    def settings_overrides(self) -> dict[str, Any]:
        """The replicas' Settings(**overrides): JSON-able, the models folder as a string."""
        return {**self.settings, "models": str(self.models)}

    def autoscaling(self) -> dict[str, Any] | None:
        if self.replicas is not None:
            return None
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": max(self.min_replicas, 1),
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


def parse_args(args: dict[str, Any]) -> RayArgs:
    """`build_app`'s args (strings from `serve run`, typed values from a YAML config) -> RayArgs.

    Raises ValueError naming each bad argument and what it expected. The models folder is not
    required to exist here: it is checked where it is read, on each replica (its health check).
    """
    own = set(RayArgs.model_fields) - {"settings"}
    settings = {k: v for k, v in args.items() if k not in own}
    problems = [f"{k}: {NOT_ARGS[k]}" for k in settings if k in NOT_ARGS]
    unknown = [k for k in settings if k not in Settings.model_fields and k not in NOT_ARGS]
    if unknown:
        known = sorted((own | set(Settings.model_fields)) - set(NOT_ARGS))
        problems.append(f"unknown argument(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(known)}")
    if problems:
        raise ValueError("invalid latentserve Ray Serve arguments: " + "; ".join(problems))
    try:
        parsed = RayArgs.model_validate({**{k: v for k, v in args.items() if k in own}, "settings": settings})
        # Every other setting is checked now, by the class that will use it. `models` is set to a
        # folder that exists because its own check belongs to the replicas (see above).
        Settings(**{**settings, "models": Path("/")})
    except ValidationError as e:
        raise ValueError("invalid latentserve Ray Serve arguments: " + describe(e)) from None
    return parsed


def describe(error: ValidationError) -> str:
    """A pydantic error as one line: `field: message; field: message`."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in error.errors())
