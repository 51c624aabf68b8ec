"""The Open Inference Protocol's published OpenAPI schema, read from `<root>/shared/schemas` beside the
checkout (never copied into the project), as jsonschema validators for its request/response bodies.

Binary tensors carry `parameters.binary_data_size` in place of `data`; `validate_binary` checks such
bodies against the same schema with `data` no longer required of a tensor that has binary data.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "open_inference_rest.yaml"
TENSORS = ("request_input", "response_output")


@functools.cache
def components(binary: bool = False) -> dict[str, Any]:
    if not SCHEMA.is_file():
        raise FileNotFoundError(
            f"the Open Inference Protocol schema is missing: expected {SCHEMA} (shared/ beside the checkout)"
        )
    schemas = yaml.safe_load(SCHEMA.read_text())["components"]["schemas"]
    if binary:
        schemas = copy.deepcopy(schemas)
        for name in TENSORS:
            tensor = schemas[name]
            tensor["required"] = [f for f in tensor["required"] if f != "data"]
            tensor["anyOf"] = [
                {"required": ["data"]},
                {
                    "required": ["parameters"],
                    "properties": {"parameters": {"required": ["binary_data_size"]}},
                },
            ]
    return schemas


def _check(body: Any, name: str, binary: bool) -> None:
    schemas = components(binary)
    assert name in schemas, f"no schema {name!r} in {SCHEMA.name}"
    validator = jsonschema.Draft7Validator({"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}})
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:3])


def validate(body: Any, name: str) -> None:
    """AssertionError unless `body` is a valid `name` (e.g. inference_request) of the schema."""
    _check(body, name, binary=False)


def validate_binary(body: Any, name: str) -> None:
    """As `validate`, for a JSON header whose tensors may carry binary data instead of `data`."""
    _check(body, name, binary=True)
