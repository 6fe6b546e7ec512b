"""The method grammar of the transfer benchmark: which initialization each run gets.

Method names: ``scratch``, ``weight-selection``, ``hypercloning``, ``net2net``,
``dwt:WAVELET:RESCALE`` (BoT; RESCALE none|std|fan|fan-sqrt), ``dct:RESCALE`` (FRONT
learngene), and any of them with a suffix that replaces the method's own normalization
layers by one rule shared across methods, so a LayerNorm gain scale cannot pass for a better
transfer: ``+nm`` moment-matches them to the source's (the ``norm="match"`` rule of
:class:`zoo.derive.Recipe`); ``+nd`` resizes them by raw haar DWT, the scale raw BoT gives
(x2 gains for a 2x L2S on both axes, x0.5 for S2L). Then three ablations of the depth axis:
``+dc`` / ``+ds`` / ``+dz`` let the method change only the width and set the depth by a
fixed rule instead: ``+dc`` by adjacent copies (``[L0, L0, L1, L1]``; shrinking: means of
adjacent layers), i.e. haar along depth with the amplitude kept, no boundary wrap; ``+ds``
by stacking (``[L0, L1, L0, L1]``, as hypercloning does; shrinking: the first layers, as
weight selection does); ``+dz`` (growing only) by copies whose repeats start as identities
(``[L0, L0', L1, L1']``, the repeats' residual-writing matrices and biases zeroed: exactly
function-preserving along depth for pre-LN models). A final ``+rd`` divides every
residual-writing matrix and bias by target depth / source depth. ``+eb`` (after the norm
suffix, before the depth ones) ablates the embeddings: every embedding table (token,
position, token type) is taken from the direction's baseline (weight selection for L2S,
hypercloning for S2L), materialized at the target width (and the source's depth: embeddings
have none), and everything else from the method. ``+hd`` (right after the method and its
norm suffix; dwt only) redoes the attention projections head-aware: the hidden axis that
indexes heads (the outputs of q, k, v and the inputs of the output projection) is seen as
(heads, head_dim) and only the heads are resized, so each target head is a whole source head
(or a blend of whole heads), never a slice of one. ``+so`` / ``+sd``, last, are zoo's
``order="similar"`` / ``"dissimilar"`` (:mod:`zoo.unit_order`): the method sees the source's
residual and FFN units chained by similarity (dissimilarity) instead of as stored (the
function is unchanged). A baseline with either is zoo's variant of it, no longer the
published baseline. ``+tl``, at the very end (dwt and dct only), lays the grown units out
tiled instead of interleaved: every axis that grew by an integer factor ``k`` (hidden, FFN,
key-value) is permuted so that target unit ``c * S + i`` is the ``c``-th copy of source unit
``i`` (HyperCloning's layout, which keeps attention heads whole; haar repeats unit ``i`` at
``k * i + c``, splitting each head across ``k`` target heads). One permutation per axis for
the whole model, so the function the method gave is kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zoo.errors import InvalidInputError
from zoo.methods import METHODS, RESCALES

#: The training-free baselines: transfers without a learngene.
BASELINES = tuple(n for n, m in METHODS.items() if m.reads_source and not m.learngene)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    method: str
    wavelet: str | None = None
    rescale: str | None = None
    norm: str | None = None  # None: the method's own; "match" (+nm) or "dwt" (+nd)
    residual_depth: bool = False  # +rd: residual-writing matrices / (target/source depth)
    depth: str | None = None  # None: the method's own; "copies" (+dc) or "stack" (+ds)
    baseline_embeddings: bool = False  # +eb: embedding tables from the direction's baseline
    head_aware: bool = False  # +hd: attention resized along (heads, head_dim), heads only
    order: str = "stored"  # +so / +sd: zoo's order="similar" / "dissimilar"
    layout: str = "method"  # +tl: grown units laid out tiled (copies in blocks), not interleaved

    @property
    def baseline(self) -> bool:
        # A published baseline reads units as stored; with +so / +sd it is zoo's variant.
        return self.method in BASELINES and self.order == "stored"


def parse_method(text: str) -> MethodSpec:
    """``dwt:db2:fan`` -> MethodSpec; see the module doc for the grammar."""
    name = text.strip()
    if "+tl" in name[:-3]:
        raise InvalidInputError(f"bad method {text!r}: +tl comes last")
    if name.endswith("+tl"):
        spec = parse_method(name[:-3])
        if spec.method not in ("dwt", "dct") or spec.layout != "method":
            raise InvalidInputError(f"bad method {text!r}: +tl follows a dwt or dct method, once")
        return dataclasses.replace(spec, name=spec.name + "+tl", layout="tiled")
    orders = {"+so": "similar", "+sd": "dissimilar"}
    if any(suffix in name[:-3] for suffix in orders):
        raise InvalidInputError(f"bad method {text!r}: +so / +sd comes last")
    if name[-3:] in orders:
        spec = parse_method(name[:-3])
        if spec.method == "scratch":
            raise InvalidInputError(f"bad method {text!r}: +so / +sd follows a transfer")
        if spec.head_aware or spec.baseline_embeddings:
            # +hd and +eb re-read the source as stored.
            raise InvalidInputError(
                f"bad method {text!r}: +hd and +eb do not combine with +so / +sd"
            )
        return dataclasses.replace(spec, name=spec.name + name[-3:], order=orders[name[-3:]])
    if name.endswith("+rd"):
        spec = parse_method(name[:-3])
        if spec.method == "scratch":
            raise InvalidInputError("+rd applies to transferred initializations, not scratch")
        return dataclasses.replace(spec, name=spec.name + "+rd", residual_depth=True)
    depth_rules = {"+dc": "copies", "+ds": "stack", "+dz": "identity"}
    if name[-3:] in depth_rules:
        spec = parse_method(name[:-3])
        if spec.method == "scratch" or spec.depth or spec.residual_depth:
            raise InvalidInputError(
                f"bad method {text!r}: +dc/+ds/+dz follow a transfer, before +rd"
            )
        if name.endswith("+dz") and (spec.head_aware or spec.norm == "dwt"):
            # +hd and +nd redo attention / norms at the target depth by the method.
            raise InvalidInputError(f"bad method {text!r}: +hd and +nd do not combine with +dz")
        return dataclasses.replace(spec, name=spec.name + name[-3:], depth=depth_rules[name[-3:]])
    if name.endswith("+eb"):
        spec = parse_method(name[:-3])
        later = spec.baseline_embeddings or spec.depth or spec.residual_depth
        if spec.method == "scratch" or later:
            raise InvalidInputError(
                f"bad method {text!r}: +eb follows a transfer, before +dc/+ds/+dz/+rd"
            )
        return dataclasses.replace(spec, name=spec.name + "+eb", baseline_embeddings=True)
    if name.endswith("+hd"):
        spec = parse_method(name[:-3])
        if spec.method != "dwt" or spec.head_aware:
            raise InvalidInputError(f"bad method {text!r}: +hd follows a dwt method, once")
        return dataclasses.replace(spec, name=spec.name + "+hd", head_aware=True)
    suffixes = {"+nm": "match", "+nd": "dwt"}
    norm = suffixes.get(name[-3:])
    body, tail = (name[:-3], name[-3:]) if norm else (name, "")
    parts = body.split(":")
    head = parts[0]
    if head == "dwt":
        wavelet = parts[1] if len(parts) > 1 and parts[1] else "haar"
        rescale = parts[2] if len(parts) > 2 and parts[2] else "none"
        if len(parts) > 3 or rescale not in RESCALES:
            raise InvalidInputError(f"bad method {text!r}: use dwt:WAVELET:RESCALE")
        return MethodSpec(f"dwt:{wavelet}:{rescale}{tail}", "dwt", wavelet, rescale, norm)
    if head == "dct":
        rescale = parts[1] if len(parts) > 1 and parts[1] else "none"
        if len(parts) > 2 or rescale not in RESCALES:
            raise InvalidInputError(f"bad method {text!r}: use dct:RESCALE")
        return MethodSpec(f"dct:{rescale}{tail}", "dct", None, rescale, norm)
    if head in (*BASELINES, "scratch") and len(parts) == 1 and not (head == "scratch" and norm):
        return MethodSpec(name, head, None, None, norm)
    raise InvalidInputError(
        f"unknown method {text!r}; use scratch, weight-selection, hypercloning, net2net, "
        "dwt:WAVELET:RESCALE or dct:RESCALE (optionally +nm or +nd, then +hd, then +eb, then "
        "+dc, +ds or +dz, then +rd, then +so or +sd)"
    )


def default_methods(direction: str) -> list[str]:
    base = ["weight-selection"] if direction == "l2s" else ["hypercloning"]
    return [
        "scratch",
        *base,
        "dwt:haar:none",
        "dwt:db2:none",
        "dwt:bior6.8:none",
        "dwt:haar:none+nm",
        "dwt:db2:none+nm",
        "dwt:db2:std",
        "dwt:haar:fan",
        "dwt:db2:fan",
        "dct:none",
    ]
