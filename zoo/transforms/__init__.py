"""Weight-signal transforms: tensors in, tensors out (BoT wavelets, FRONT DCT, baselines).

The primitives the methods of :mod:`zoo.methods` are made of; :func:`zoo.methods.resize`
resizes a signal by a method's name.

Every function is pure (no files, no database), works on any torch device, computes
fp16/bf16 in fp32 and returns the input dtype, and raises :class:`zoo.errors.TransformError`
naming the offending argument. See docs/transforms.md for the rules on non-dyadic sizes,
odd lengths, amplitude and FRONT's depth expansion.
"""

from __future__ import annotations

from .baselines import net2net_widen, select_indices, tile, weight_select
from .dct import dct, dct_resize, idct
from .front import FrontBlock, front_extract, front_materialize
from .sizes import dyadic_plan
from .wavelets import dwt_approx, idwt_zero, wavedec, waverec

# Bump when any transform's numerics change; recorded in lineage. 3: products, FFTs and
# reductions in shape-fixed blocks on one intra-op thread each (zoo/_threads.py), so the
# bits no longer depend on the thread count; a few last-bit changes against 2. 4: the
# statistics of a signal and of its resized result (learngenes' mean and std, the std and
# fan amplitude rules) in float64 blocks merged in order (moments.py), not over one
# float64 copy of the whole tensor.
TRANSFORM_VERSION = "4"

__all__ = [
    "TRANSFORM_VERSION",
    "FrontBlock",
    "dct",
    "dct_resize",
    "dwt_approx",
    "dyadic_plan",
    "front_extract",
    "front_materialize",
    "idct",
    "idwt_zero",
    "net2net_widen",
    "select_indices",
    "tile",
    "wavedec",
    "waverec",
    "weight_select",
]
