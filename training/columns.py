"""Choosing a table's feature columns: `--columns` and `--drop-columns`, by name or by index.

A column is named by its header name, or by its position counting from 1 (as the error
messages count). A token that is a header name is that name, even when it looks like a
number. The kept columns stay in the file's order, which the manifest's feature names keep.
"""

from __future__ import annotations

from collections.abc import Sequence


class ColumnError(ValueError):
    """A column choice that does not fit the file; the data loader turns it into a DataError."""


def parse_columns(text: str) -> tuple[str, ...]:
    """`id,label` or `1,15` from the command line: names or 1-based positions, comma-separated."""
    tokens = tuple(t.strip() for t in text.split(","))
    if not tokens or any(not t for t in tokens):
        raise ValueError(f"expected comma-separated column names or positions like sample_id,cultivar, got {text!r}")
    return tokens


def _index(token: str, header: Sequence[str] | None, width: int, source: str, flag: str) -> int:
    if header is not None and token in header:
        return list(header).index(token)
    if token.lstrip("-").isdigit():
        position = int(token)
        if 1 <= position <= width:
            return position - 1
        raise ColumnError(f"{source}: {flag} {token}: positions count from 1 to {width} (the file has {width} columns)")
    names = f"; its columns are {', '.join(map(repr, header))}" if header else " (it has no header: use positions)"
    raise ColumnError(f"{source}: {flag} names {token!r}, which is not a column of the file{names}")


def select(
    header: Sequence[str] | None,
    width: int,
    columns: Sequence[str] | None,
    drop: Sequence[str] | None,
    source: str,
) -> list[int]:
    """The indices of the kept columns, in the file's order."""
    keep = list(range(width))
    if columns:
        chosen = [_index(t, header, width, source, "--columns") for t in columns]
        if len(set(chosen)) != len(chosen):
            raise ColumnError(f"{source}: --columns names a column twice: {', '.join(columns)}")
        keep = sorted(chosen)
    if drop:
        dropped = {_index(t, header, width, source, "--drop-columns") for t in drop}
        keep = [j for j in keep if j not in dropped]
    if not keep:
        raise ColumnError(f"{source}: --columns / --drop-columns leave no column of its {width} to train on")
    return keep


def suggestion(bad: Sequence[int], header: Sequence[str] | None) -> str:
    """What to pass to leave out the non-numeric columns `bad` (0-based)."""
    names = [header[j] if header and header[j] and "," not in header[j] else str(j + 1) for j in bad]
    return f"leave {'it' if len(bad) == 1 else 'them'} out with --drop-columns {','.join(names)} (or choose the features with --columns)"
