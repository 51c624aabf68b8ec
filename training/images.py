"""Image arrays as training data: their layout (one image per row) and whether they hold pixels.

`--data` accepts .npy/.npz arrays of shape (N, H, W), (N, C, H, W) or (N, H, W, C) (C in 1, 3, 4),
and (N, F) with `--image-shape H,W[,C]`; (N, F) rows that can only be square images (F a square,
pixel values, constant border columns: `inferred_image_shape`) are taken for them unless
`--allow-constant` says they are a table. Each image is flattened to one row; the manifest's
`image_shape` is the shape one row reshapes to (row.reshape(image_shape) is the image), so that
a client flattens its images the same way (np.reshape(images, (len(images), -1))).

Pixels are scaled by their known range, not standardised (constant border pixels are then
expected, not an error): integer values in [0, 255] (uint8 images, or integer-valued floats),
the range being 0..255, or 0..max for images of at most 16 levels (binary masks, the bundled
digits' 0..16); or floats in [0, 1]. Anything else (a float image outside [0, 1], such as
mean-subtracted pixels) keeps its image shape for the run folder's grids, but is scaled as a
table (standardised) and modelled with a Gaussian likelihood.
"""

from __future__ import annotations

import math

import numpy as np

CHANNELS = (1, 3, 4)
FEW_LEVELS = 16  # integer images whose maximum is at most this are scaled 0..max (digits: 0..16)


class ImageShapeError(ValueError):
    """An --image-shape that does not fit the data; the data loader turns it into a DataError."""


def parse_image_shape(text: str) -> tuple[int, ...]:
    """`H,W` or `H,W,C` (C in 1, 3, 4) from the command line."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"expected H,W or H,W,C like 28,28 or 32,32,3, got {text!r}") from None
    check_image_shape(shape)
    return shape


def check_image_shape(shape: tuple[int, ...]) -> None:
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise ValueError(f"--image-shape must be H,W or H,W,C with positive sizes, got {','.join(map(str, shape))}")
    if len(shape) == 3 and shape[2] not in CHANNELS:
        raise ValueError(f"--image-shape channels (the third size) must be 1, 3 or 4, got {shape[2]}")


def image_rows(x: np.ndarray, image_shape: tuple[int, ...] | None, source: str) -> tuple[np.ndarray, tuple | None]:
    """(rows (N, F), the row's image shape or None) from an array of 2, 3 or 4 dimensions."""
    if x.ndim == 2:
        if image_shape is None:
            return x, None
        if math.prod(image_shape) != x.shape[1]:
            raise ImageShapeError(
                f"{source}: --image-shape {','.join(map(str, image_shape))} holds {math.prod(image_shape)} "
                f"pixels, but the rows have {x.shape[1]} values"
            )
        return x, tuple(image_shape)
    if x.ndim not in (3, 4):
        raise ImageShapeError(
            f"{source} holds an array of shape {x.shape}: expected (rows, features), (N, H, W), "
            "(N, C, H, W) or (N, H, W, C)"
        )
    shape = tuple(int(s) for s in x.shape[1:])
    if x.ndim == 4 and shape[0] not in CHANNELS and shape[2] not in CHANNELS:
        raise ImageShapeError(
            f"{source} holds an array of shape {x.shape}: a 4-dimensional array must be (N, C, H, W) or "
            f"(N, H, W, C) with C in 1, 3 or 4"
        )
    if image_shape is not None and math.prod(image_shape) != math.prod(shape):
        raise ImageShapeError(
            f"{source}: --image-shape {','.join(map(str, image_shape))} does not fit its images of shape {shape}"
        )
    return x.reshape(len(x), -1), shape


def pixel_range(x: np.ndarray, integer_dtype: bool) -> tuple[float, float] | None:
    """The known value range when `x` holds pixels (see the module's docstring), else None."""
    if x.size == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        return None
    if integer_dtype or (hi > 1 and bool(np.all(x == np.round(x)))):
        top = hi if 1 <= hi <= FEW_LEVELS else 255.0
        return 0.0, top
    if hi <= 1:
        return 0.0, 1.0
    return None  # floats beyond 1 that are not whole numbers: not pixels


def channels_last(shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The permutation that shows an image of this row shape as (H, W[, C]) for plotting."""
    if len(shape) == 3 and shape[0] in CHANNELS and shape[2] not in CHANNELS:
        return (1, 2, 0)
    return tuple(range(len(shape)))


def inferred_image_shape(x: np.ndarray) -> tuple[int, int] | None:
    """(side, side) for (N, F) rows that can only be square images: pixel values with F = side²
    (side ≥ 8), and some column constant over all rows (border pixels). Such rows would otherwise
    be refused as a table (its constant columns); nothing that trains as a table today is taken
    for images. None otherwise."""
    side = _square_pixel_side(x)
    if side is None or len(x) < 2 or not bool((x.min(axis=0) == x.max(axis=0)).any()):
        return None
    return side, side


def looks_like_flat_images(x: np.ndarray) -> str | None:
    """A hint for (N, F) pixel data given without --image-shape: '--image-shape 28,28' when F is a square."""
    side = _square_pixel_side(x)
    return f"--image-shape {side},{side}" if side is not None else None


def _square_pixel_side(x: np.ndarray) -> int | None:
    """The side of (N, F) rows of pixel values whose F is a square of at least 8x8, else None."""
    if x.ndim != 2:
        return None
    side = math.isqrt(x.shape[1])
    if side < 8 or side * side != x.shape[1]:
        return None
    return side if pixel_range(x, np.issubdtype(x.dtype, np.integer)) is not None else None
