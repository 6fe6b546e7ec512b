"""Materialization methods: one module each, a small interface, a registry by name.

| module | method |
|---|---|
| ``dwt.py`` | BoT's wavelet resize (reads dwt learngenes) |
| ``dct.py`` | FRONT's band-limited DCT resize (reads dct learngenes) |
| ``weight_selection.py`` | weight selection: shrink by keeping a subset |
| ``hypercloning.py`` | HyperCloning: grow by whole multiples, function kept |
| ``net2net.py`` | Net2Net: grow by random unit copies |
| ``scratch.py`` | the target architecture's own random initialization |

``base.py`` is the interface (:class:`Method`), ``registry.py`` the vocabulary
(:data:`METHODS`), ``amplitude.py`` the amplitude rule every method's result goes
through, and ``resize.py`` the one entry point that resizes a signal by name. Pure: tensors
in, tensors out, over :mod:`zoo.transforms`; nothing here imports torch until a signal is
resized.
"""

from __future__ import annotations

from .amplitude import RESCALES, Amplitude
from .base import OPTIONS, Method
from .dct import DCT
from .dwt import DWT
from .hypercloning import HYPERCLONING
from .net2net import NET2NET
from .registry import LEARNGENE_METHODS, METHODS, check_target, either, get, taking
from .resize import resize
from .scratch import SCRATCH
from .weight_selection import WEIGHT_SELECTION

__all__ = [
    "DCT",
    "DWT",
    "HYPERCLONING",
    "LEARNGENE_METHODS",
    "METHODS",
    "NET2NET",
    "OPTIONS",
    "RESCALES",
    "SCRATCH",
    "WEIGHT_SELECTION",
    "Amplitude",
    "Method",
    "check_target",
    "either",
    "get",
    "resize",
    "taking",
]
