"""What the registry's methods take, checked before any work: by :class:`zoo.Registry`
and by a client (:class:`zoo.client.RemoteRegistry`) before any request, so both refuse
the same arguments in the same class and words. Without SQLAlchemy or torch: a client
process imports this module."""

from __future__ import annotations

import math
import re

from zoo.errors import InvalidInputError

#: The seeds a torch generator takes (a signed or an unsigned 64-bit number).
SEED_RANGE = (-(2**63), 2**64 - 1)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")

#: The options of a materialization that name a setting (looked up in zoo's tables).
NAMED_OPTIONS = ("method", "wavelet", "rescale", "norm", "depth", "order", "dtype")

#: The arguments of a materialization :func:`check_materialize` checks.
CHECKED = ("layers", "hidden", "heads", "intermediate", "kv_heads", "seed", "device")
CHECKED += NAMED_OPTIONS


#: The filters :meth:`zoo.Registry.list` takes besides kind, family and include_deleted:
#: search()'s, less its paging.
LIST_FILTERS = (
    "name",
    "min_layers",
    "max_layers",
    "min_hidden",
    "max_hidden",
    "derived_from",
    "created_by",
    "created_after",
    "created_before",
)


def check_list_filters(filters) -> None:
    """The keywords of a list() call: a paging one is explained, any other unknown is
    refused as Python refuses an unknown keyword, in list()'s name (not search()'s, which
    list() reads with)."""
    paging = sorted({"limit", "after", "newest_first"} & filters.keys())
    if paging:
        raise TypeError(
            f"list() returns every match, oldest first, and takes no {', '.join(paging)}; "
            "search() gives one page."
        )
    for key in filters:
        if key not in LIST_FILTERS:
            raise TypeError(f"list() got an unexpected keyword argument {key!r}")


def check_flags(**flags) -> None:
    """Yes-or-no options: True or False, not "yes", "no" (true, as any non-empty text is),
    1 or None, which a caller meant as something else or mistyped."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidInputError(f"{name}= is True or False, not {value!r:.40}.", params=[name])


def check_seed(seed) -> None:
    low, high = SEED_RANGE
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high
    ):
        raise InvalidInputError(
            f"seed= is a whole number from {low} to {high}, not {seed!r}.", params=["seed"]
        )


def check_device(device) -> None:
    """A device's name (cpu, cuda, cuda:1) or a GPU's index, as torch reads it."""
    if isinstance(device, bool) or not isinstance(device, (str, int, type(None))):
        raise InvalidInputError(f"A device is a name such as cpu or cuda, not {device!r:.40}.")
    if device == "":  # not "the default": a value that went missing on its way here
        raise InvalidInputError("The device is empty; give cpu or cuda, or leave it out.")


def check_materialize(
    *, layers, hidden, heads, intermediate, kv_heads, seed, device, **named
) -> None:
    """The arguments of :meth:`zoo.Registry.materialize` whose type or range is wrong
    whatever is materialized; the family's own rules (a hidden size its heads divide) are
    checked once the source is known."""
    from zoo.derive import DTYPES
    from zoo.families._common import check_size

    check_size("layers", layers)
    check_size("hidden", hidden)
    for what, value in (("heads", heads), ("intermediate", intermediate), ("kv_heads", kv_heads)):
        if value is not None:
            check_size(what, value)
    for option in NAMED_OPTIONS:
        value = named[option]
        if value is not None and not isinstance(value, str):  # a name, looked up in tables
            raise InvalidInputError(
                f"{option}= is a name, not a {type(value).__name__}.", params=[option]
            )
    if named["dtype"] not in DTYPES:  # None too: its default is auto
        raise InvalidInputError(
            f"Unknown dtype {named['dtype']!r}; choose one of {', '.join(DTYPES)}."
        )
    check_seed(seed)
    check_device(device)


def check_extract(*, method, wavelet, levels, keep, order, name, device) -> None:
    """The arguments of :meth:`zoo.Registry.extract`, all but whether PyWavelets knows the
    wavelet's name (:func:`zoo.api.learngene_format.check_wavelet`)."""
    from zoo.checkpoint.names import validate_name
    from zoo.methods import LEARNGENE_METHODS
    from zoo.unit_order import check_order

    if name is not None:
        validate_name(name)
    check_order(order)
    if method == "dwt":
        if wavelet is not None and not isinstance(wavelet, str):
            raise InvalidInputError(
                f"Unknown wavelet {wavelet!r}; any discrete wavelet PyWavelets knows works "
                "(haar, db2, coif3, sym8, bior6.8...)."
            )
        if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int)):
            raise InvalidInputError(
                f"levels= must be a whole number, got {levels!r}.", params=["levels"]
            )
        if levels is not None and levels < 1:
            raise InvalidInputError(f"levels= must be at least 1, got {levels}.", params=["levels"])
        if keep is not None:
            raise InvalidInputError(
                "keep= applies to method='dct', not dwt.", params=["keep", "method"]
            )
    elif method == "dct":
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float))):
            raise InvalidInputError(
                f"keep= is a number in (0, 1], not {keep!r:.40}.", params=["keep"]
            )
        if keep is not None and not 0 < keep <= 1:
            raise InvalidInputError(f"keep= must be in (0, 1], got {keep}.", params=["keep"])
        if wavelet is not None or levels is not None:
            raise InvalidInputError(
                "wavelet= and levels= apply to method='dwt', not dct.",
                params=["wavelet", "levels", "method"],
            )
    else:
        raise InvalidInputError(
            f"Unknown extraction method {method!r}; choose one of {', '.join(LEARNGENE_METHODS)}."
        )
    check_device(device)


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` or a plain number.

    Example:
        >>> parse_duration("24h")
        86400.0
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if isinstance(text, int) and abs(text) > 2**1000:  # beyond a float (and a repr)
            raise InvalidInputError(
                f"A duration is a finite number of seconds (got a {text.bit_length()}-bit number)."
            )
        seconds = float(text)
        if not math.isfinite(seconds):  # NaN compares false to every age: nothing swept
            raise InvalidInputError(f"A duration is a finite number of seconds (got {text!r}).")
    elif not isinstance(text, str):
        raise InvalidInputError(f"A duration is text such as 24h or seconds, not {text!r:.40}.")
    else:
        match = _DURATION.fullmatch(text)
        if not match:
            raise InvalidInputError(
                f"{text!r} is not a duration; write a number with s, m, h, d or w (e.g. 24h)."
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise InvalidInputError(f"A duration cannot be negative (got {text!r}).")
    return seconds
