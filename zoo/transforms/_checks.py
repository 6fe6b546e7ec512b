"""Argument checks and dtype policy shared by every transform.

Every check raises :class:`zoo.errors.TransformError` whose message names the argument,
so a caller can tell which of its inputs to fix.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch

from zoo.errors import TransformError

# Half precision is computed in fp32: the filters and DCT matrices lose digits in fp16/bf16
# and the sums over thousands of terms would round away the small coefficients.
_UPCAST = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a tensor of ``dtype`` is computed in (fp32 for fp16/bf16)."""
    return _UPCAST.get(dtype, dtype)


def as_float(x: object, name: str = "x") -> torch.Tensor:
    """Return ``x`` in its compute dtype (fp32 for fp16/bf16, else unchanged)."""
    x = check_float(x, name)
    return x.to(_UPCAST.get(x.dtype, x.dtype))


def check_float(x: object, name: str = "x") -> torch.Tensor:
    """``x`` itself, once it is checked to be a floating-point tensor of one axis or more."""
    if not isinstance(x, torch.Tensor):
        raise TransformError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TransformError(
            f"`{name}` must be a floating-point tensor, got dtype {x.dtype}; "
            f"convert it with `{name}.float()` first."
        )
    if x.ndim == 0:
        raise TransformError(f"`{name}` must have at least one dimension, got a scalar.")
    return x


def norm_axes(axes: Sequence[int] | int, ndim: int, name: str = "axes") -> list[int]:
    """Normalize ``axes`` to sorted-as-given non-negative, unique axis indices."""
    if isinstance(axes, int):
        axes = [axes]
    try:
        axes = [int(a) for a in axes]
    except TypeError as err:
        raise TransformError(f"`{name}` must be a sequence of ints, got {axes!r}.") from err
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise TransformError(f"`{name}` has axis {a}, out of range for a {ndim}-D tensor.")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise TransformError(f"`{name}` repeats an axis: {list(axes)!r}.")
    return out


def norm_axis(axis: int | None, ndim: int, name: str) -> int | None:
    """Normalize one optional axis index."""
    if axis is None:
        return None
    return norm_axes([axis], ndim, name)[0]


def check_shape(shape: Sequence[int], ndim: int, name: str = "shape") -> list[int]:
    """Return ``shape`` as a list of positive ints with exactly ``ndim`` entries."""
    try:
        sizes = list(shape)
    except TypeError as err:
        raise TransformError(f"`{name}` must be a sequence of ints, got {shape!r}.") from err
    # A size is a whole number: 4.5 is refused, not cut to 4 (a bool is no size either).
    if not all(_is_whole(s) for s in sizes):
        raise TransformError(f"`{name}` must be a sequence of ints, got {shape!r}.")
    shape = [int(s) for s in sizes]
    if len(shape) != ndim:
        raise TransformError(
            f"`{name}` has {len(shape)} dims but the tensor has {ndim}; give one size per dim."
        )
    if any(s <= 0 for s in shape):
        raise TransformError(f"`{name}` must contain only positive sizes, got {shape}.")
    return shape


def _is_whole(value) -> bool:
    """An int (or a float, numpy or torch scalar holding one); not a bool, not text, not
    a complex number, not an array or tensor of one or more values."""
    if type(value) is int:  # the common case, checked first: every derivation's shapes
        return True
    if isinstance(value, (bool, str, bytes, bytearray, complex)):
        return False
    dtype = str(getattr(value, "dtype", ""))
    if getattr(value, "ndim", 0) != 0 or "bool" in dtype or "complex" in dtype:
        return False
    try:
        operator.index(value)  # an int, or an integer numpy or torch scalar
        return True
    except TypeError:
        pass
    try:
        return float(value).is_integer()  # 4.0, or a float scalar holding a whole number
    except Exception:
        return False


def check_count(value, name: str, *, least: int = 1) -> int:
    """``value`` as a whole number of at least ``least``, else TransformError naming it."""
    if not _is_whole(value) or int(value) < least:
        raise TransformError(f"`{name}` must be a whole number of at least {least}, got {value!r}.")
    return int(value)


def check_level(level: int, sizes: Sequence[int], name: str = "level") -> int:
    """Every transformed length must be divisible by 2**level (periodization halves exactly)."""
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise TransformError(f"`{name}` must be a non-negative int, got {level!r}.")
    step = 2**level
    bad = [n for n in sizes if n % step]
    if bad:
        raise TransformError(
            f"`{name}`={level} is too high: lengths {bad} are not divisible by 2**{level}; "
            f"periodization needs an even length at every level. Use a lower level or "
            f"`resize`, which bridges non-dyadic sizes."
        )
    return level


def restore(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cast a result back to the input's dtype."""
    return y if y.dtype == like.dtype else y.to(like.dtype)


def sqrt_ratio(num: int, den: int) -> float:
    return math.sqrt(num / den)
