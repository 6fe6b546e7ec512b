"""A learngene's format: the names of its tensors and the settings that identify it.

A learngene is stored as tensors named ``SIGNAL@dwtK`` (the cA band after K levels over
every changeable axis), ``SIGNAL@dct.block`` / ``@dct.mean`` / ``@dct.std`` (the FRONT
block and the per-layer statistics that undo its normalization) or ``SIGNAL@full`` (a
signal nothing in which changes size). Extraction (:mod:`zoo.api.learngenes`) writes them
and derivation (:mod:`zoo.api.derivation`) reads them; both take the names from here.
"""

from __future__ import annotations

from typing import Any

from zoo.errors import InvalidInputError

DEFAULT_LEVELS = 2
DEFAULT_WAVELET = "db2"
DEFAULT_KEEP = 0.5


def check_wavelet(wavelet: str) -> None:
    """Refuse a name that is not a discrete wavelet PyWavelets knows."""
    import pywt

    if wavelet not in pywt.wavelist(kind="discrete"):
        raise InvalidInputError(
            f"Unknown wavelet {wavelet!r}; any discrete wavelet PyWavelets knows works "
            "(haar, db2, coif3, sym8, bior6.8...)."
        )


def band_name(signal: str, level: int) -> str:
    return f"{signal}@dwt{level}"


def full_name(signal: str) -> str:
    return f"{signal}@full"


def extract_recipe(
    method: str,
    *,
    wavelet: str | None,
    levels: int | None,
    keep: float | None,
    order: str = "stored",
) -> dict[str, Any]:
    """The normalized settings of an extraction (its identity besides the source)."""
    from zoo.api.arguments import check_extract
    from zoo.transforms import TRANSFORM_VERSION

    check_extract(
        method=method,
        wavelet=wavelet,
        levels=levels,
        keep=keep,
        order=order,
        name=None,
        device=None,
    )
    # The default order is left out, so learngenes extracted before orders existed
    # keep their identity.
    ordered = {} if order == "stored" else {"order": order}
    if method == "dwt":
        # db2: the wavelet of every dwt entry in zoo/defaults.py (the transfer benchmark).
        wavelet = DEFAULT_WAVELET if wavelet is None else wavelet  # '' is refused below
        check_wavelet(wavelet)
        return {
            "method": "dwt",
            "wavelet": wavelet,
            "levels": DEFAULT_LEVELS if levels is None else levels,
            **ordered,
            "transform_version": TRANSFORM_VERSION,
        }
    keep = DEFAULT_KEEP if keep is None else keep
    return {"method": "dct", "keep": keep, **ordered, "transform_version": TRANSFORM_VERSION}


def changeable_axes(axes: tuple[str, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(i for i, role in enumerate(axes) if role in sizes)


def dwt_levels(shape: tuple[int, ...], axes: tuple[int, ...], wanted: int) -> list[int]:
    """Levels 1..wanted at which every changeable axis still halves exactly."""
    out = []
    for k in range(1, wanted + 1):
        if not all(shape[a] % (2**k) == 0 and shape[a] >= 2**k for a in axes):
            break  # an axis that does not halve at level k halves at no deeper one
        out.append(k)
    return out


def short_bands(info) -> list[dict[str, Any]]:
    """The parameter groups of a dwt learngene (an :class:`~zoo.db.entities.ArtifactInfo`)
    that hold fewer levels than it was extracted with, in name order: ``{"signal",
    "levels"`` (those it holds, maybe none), ``"limits"`` (each resizable axis that does
    not halve at the next level, by role: its size)``}``. A band halves every resizable
    axis of its group, so one axis that does not halve (7 layers) leaves the group
    without that level and every deeper one; materializing it then reads the source.
    Computed from the recorded info, so learngenes extracted before it are described
    too."""
    from zoo.families import get_family

    meta = info.info or {}
    if info.kind != "learngene" or meta.get("method") != "dwt" or info.family is None:
        return []
    wanted = meta.get("levels", 0)
    sizes = get_family(info.family).axis_sizes(info.config)
    out = []
    for key, sig in sorted((meta.get("signals") or {}).items()):
        held = list(sig.get("levels", []))
        if sig.get("full") or len(held) >= wanted:
            continue
        roles, shape, step = sig["axes"], sig["shape"], 2 ** (len(held) + 1)
        limits = {
            roles[a]: shape[a] for a in changeable_axes(tuple(roles), sizes) if shape[a] % step
        }
        out.append({"signal": key, "levels": held, "limits": limits})
    return out
