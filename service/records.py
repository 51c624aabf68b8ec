"""`records`: rows sent as objects keyed by feature name, beside the positional `inputs`.

`{"model": "wine-ae", "records": [{"alcohol": 13.2, "malic_acid": 1.78, ...}]}` is the same
request as `inputs` with the values in the manifest's `feature_names` order (shown by /models).
Every record must name every feature, and nothing else: a missing or unknown name is a 422
that lists the names concerned, the first record that has the problem, and the expected names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import InvalidInput

MAX_LISTED = 8


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(n if len(n) <= 40 else n[:40] + "…") for n in names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def rows_of(model: Any, body: Any, rows: Any) -> Any:
    """The request's rows: `inputs` as parsed, or `records` as a (B, F) float64 matrix in feature order."""
    records = getattr(body, "records", None)
    if records is None:
        if rows is None:
            raise InvalidInput(
                "inputs is required: rows of raw feature values (or records: objects keyed by feature name)"
            )
        return rows
    if rows is not None:
        raise InvalidInput("send inputs (rows of values) or records (objects keyed by feature name), not both")
    names = model.manifest.feature_names
    if not names:
        raise InvalidInput(
            f"model {model.name!r} has no feature names (trained on a file without a header), so records "
            f"cannot be matched to its features: send inputs, rows of {model.manifest.n_features} values"
        )
    if len(records) > model.max_rows:
        raise InvalidInput(f"records holds {len(records)} rows; at most {model.max_rows} per request")
    expected = set(names)
    for i, record in enumerate(records):
        keys = record.keys()
        if keys != expected:
            missing = [n for n in names if n not in record]
            unknown = [k for k in record if k not in expected]
            problems = []
            if missing:
                problems.append(f"misses {_listed(missing)}")
            if unknown:
                problems.append(f"has unknown {_listed(unknown)}")
            raise InvalidInput(
                f"records[{i}] {' and '.join(problems)}: model {model.name!r} expects exactly the feature "
                f"names {_listed(list(names))} (see /models)"
            )
    return np.array([[record[n] for n in names] for record in records], dtype=np.float64)
