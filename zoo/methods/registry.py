"""The methods zoo materializes with, by name: the one vocabulary every layer reads.

The CLI's choices, a recipe's validation, the target check, the defaults table and
:func:`zoo.methods.resize`'s dispatch all come from :data:`METHODS`; adding a method is
one module here and one line below.
"""

from __future__ import annotations

from collections.abc import Mapping

from zoo.errors import InvalidInputError, InvalidTargetError

from .base import Method
from .dct import DCT
from .dwt import DWT
from .hypercloning import HYPERCLONING
from .net2net import NET2NET
from .scratch import SCRATCH
from .weight_selection import WEIGHT_SELECTION

#: name -> method, in the order users see them (learngene methods first).
METHODS: dict[str, Method] = {
    m.name: m for m in (DWT, DCT, WEIGHT_SELECTION, HYPERCLONING, NET2NET, SCRATCH)
}
#: The methods ``zoo extract`` makes a learngene for.
LEARNGENE_METHODS = tuple(n for n, m in METHODS.items() if m.learngene)


def get(name: str) -> Method:
    """The method called ``name``; one line naming the known ones otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"Unknown method {name!r}; choose one of {', '.join(METHODS)}."
        ) from None


def taking(option: str) -> tuple[str, ...]:
    """The names of the methods that read the recipe option ``option``."""
    return tuple(n for n, m in METHODS.items() if option in m.options)


def either(names) -> str:
    """``a, b or c``: names as a user reads a choice."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_target(name: str, source_sizes: Mapping[str, int], target_sizes: Mapping[str, int]):
    """Refuse, before any work, a target the method cannot produce; say which can."""
    method = get(name)
    grows = [r for r in target_sizes if target_sizes[r] > source_sizes.get(r, 0)]
    shrinks = [r for r in target_sizes if target_sizes[r] < source_sizes.get(r, 0)]
    uneven = method.uneven(source_sizes, target_sizes)
    problem = None
    if grows and not method.grows:
        problem = (
            f"{name} only shrinks, but {', '.join(grows)} grows; "
            f"use {_others(name, 'grows')} to grow"
        )
    elif shrinks and not method.shrinks:
        problem = (
            f"{name} only grows, but {', '.join(shrinks)} shrinks; "
            f"use {_others(name, 'shrinks')} to shrink"
        )
    elif uneven:
        # Each axis with its own sizes: hidden, ffn and kv grow from different sizes.
        goes = either(f"{r} {source_sizes[r]} -> {target_sizes[r]}" for r in uneven)
        problem = (
            f"{name} needs integer multipliers, not {goes}; "
            f"use {_others(name, 'grows', even=False)} for other ratios"
        )
    if problem:
        raise InvalidTargetError(problem[0].upper() + problem[1:] + ".")


def _others(name: str, ability: str, *, even: bool = True) -> str:
    """The other transfers (methods that read the source) with ``ability``, as text."""
    able = [m for n, m in METHODS.items() if n != name and m.reads_source and getattr(m, ability)]
    return either(m.name for m in able if even or not m.integer_multiples)
