"""Deriving a target-size state dict from a source's signals or a learngene's bands.

Pure tensors in, tensors out: no database, no files. :mod:`zoo.api.materialize` reads
the inputs from the registry and records what comes out. Everything here is
deterministic for the same inputs on the same device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from zoo.errors import InvalidInputError
from zoo.methods import Amplitude, get, resize
from zoo.methods.amplitude import CURRENT

if TYPE_CHECKING:
    import torch

    from zoo.families.base import SignalSpec

#: How normalization layers are resized (see :class:`Recipe`); "method" is the default.
NORMS = ("method", "match")
#: How a deeper target gets its layers (see :class:`Recipe`); "method" is the default.
DEPTHS = ("method", "identity")
#: The dtype of a target's floating-point tensors; "auto" keeps each source tensor's.
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: How a target written in another dtype than its source's is computed; recorded on the
#: lineage edge when the recipe names a dtype (absent: "1"), so a checkpoint recorded before
#: re-derives by its own rule. 1: every signal derived in the source's dtype and the result
#: cast to the recipe's (a bf16 source's HyperCloning divisions rounded to bf16, then
#: widened). 2: a half-precision signal written in another dtype is derived in float32
#: and rounded once, to the dtype written (:func:`compute_dtype`).
DTYPE_VERSION = "2"
#: Signals whose output is added to the residual stream (every family names them so).
RESIDUAL_WRITERS = frozenset(
    {"attn.out.weight", "attn.out.bias", "ffn.out.weight", "ffn.out.bias"}
    | {"ffn.down.weight", "ffn.down.bias"}
)


@dataclass(frozen=True)
class Recipe:
    """How a derived checkpoint is made; recorded on its lineage edge.

    Attributes:
        method: a name of :data:`zoo.methods.METHODS`.
        wavelet: the wavelet for ``dwt``.
        rescale: amplitude rule: ``none`` (raw coefficients, as the papers), ``std``
            (match the source signal's std), ``fan`` (std-matched, then each matrix
            divided by its input-width multiplier), ``fan-sqrt`` (divided by the
            multiplier's square root) or ``exact`` (values instead of orthonormal
            coefficients, inputs summed when shrinking and split when growing:
            :func:`zoo.methods.amplitude.exact_gain`; with haar, a grown model repeats units and
            keeps each linear layer's function, a shrunk one merges pairs of units).
        seed: seeds the methods that draw random numbers (``scratch``, ``net2net``).
        norm: how normalization parameters (LayerNorm/RMSNorm gains and biases) are
            resized. ``method`` (default): by the method, then moment-matched to the
            source's mean and std when ``rescale`` is not none. ``match``: every method's
            result is moment-matched to the source's, raw ``dwt``/``dct`` and the baselines
            alike, so a gain scale (raw L2S doubles LayerNorm gains) cannot pass for a
            better transfer. ``scratch`` keeps its ones and zeros either way. Left out of
            :meth:`to_json` when it is the default, so existing recipes keep their JSON.
        depth: how a target deeper than the source gets its layers. ``method``
            (default): the method resizes the layer axis like any other. ``identity``: the
            method resizes everything but depth, then each source layer is followed by
            copies of itself whose residual-writing matrices and biases are zero, so they
            start as identities (Net2Net's deepening; exactly function-preserving along
            depth for pre-norm models). No effect when the depth does not grow; left out
            of :meth:`to_json` when it is the default.
        order: the unit order the method sees (:mod:`zoo.unit_order`): ``stored``
            (default) or ``similar`` (units chained by similarity first; the function is
            unchanged). From a learngene, the order it was extracted in. Left out of
            :meth:`to_json` when it is the default.
        dtype: the floating-point dtype the target is written in: ``auto`` (default: each
            tensor keeps its source's) or one of :data:`DTYPES`; integer buffers never
            change. Left out of :meth:`to_json` when it is the default.
    """

    method: str
    wavelet: str | None = None
    rescale: str = "none"
    seed: int = 0
    norm: str = "method"
    depth: str = "method"
    order: str = "stored"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        from zoo.methods import RESCALES, get
        from zoo.unit_order import check_order

        check_order(self.order)
        method = get(self.method)
        if self.rescale not in RESCALES:
            raise InvalidInputError(
                f"Unknown rescale {self.rescale!r}; choose one of {', '.join(RESCALES)}."
            )
        if self.norm not in NORMS:
            raise InvalidInputError(
                f"Unknown norm rule {self.norm!r}; choose one of {', '.join(NORMS)}."
            )
        if self.depth not in DEPTHS:
            raise InvalidInputError(
                f"Unknown depth rule {self.depth!r}; choose one of {', '.join(DEPTHS)}."
            )
        if self.dtype not in DTYPES:
            raise InvalidInputError(
                f"Unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}."
            )
        if self.depth == "identity" and "depth" not in method.options:
            raise InvalidInputError(
                f"depth='identity' repeats transferred layers; {self.method} has none to repeat.",
                params=["depth"],
            )
        if self.order != "stored" and "order" not in method.options:
            raise InvalidInputError(
                f"order= applies to transfers; {self.method} reads no units.", params=["order"]
            )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        defaults = (("norm", "method"), ("depth", "method"), ("order", "stored"), ("dtype", "auto"))
        for key, default in defaults:
            if out[key] == default:
                del out[key]
        return out


def compute_dtype(dtype: torch.dtype, recipe: Recipe, version: int | None = None) -> torch.dtype:
    """The dtype a signal stored in ``dtype`` is derived in under ``recipe``: its own, or
    float32 for a half-precision one the recipe writes in another dtype (from dtype version
    2, :data:`DTYPE_VERSION`), so the methods that compute in the source's dtype
    (HyperCloning's divisions) are not rounded to it first."""
    import torch

    version = int(DTYPE_VERSION) if version is None else version
    if version < 2 or recipe.dtype in ("auto", str(dtype).removeprefix("torch.")):
        return dtype
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def in_compute_dtype(x: torch.Tensor, recipe: Recipe, version: int | None = None) -> torch.Tensor:
    """``x`` in :func:`compute_dtype` (``x`` itself when that is its own)."""
    import torch

    dtype = compute_dtype(x.dtype, recipe, version)
    if dtype == x.dtype:
        return x
    if not get(recipe.method).reads_source:
        # Scratch reads only the shape: zeros expanded, never a copy of the source's size.
        return torch.zeros((), dtype=dtype, device=x.device).expand(x.shape)
    return x.to(dtype)


def target_shape(
    axes: tuple[str, ...], shape: tuple[int, ...], target_sizes: Mapping[str, int]
) -> tuple[int, ...]:
    """The signal's shape at the target size: changeable roles resize, fixed ones stay."""
    return tuple(target_sizes.get(role, n) for role, n in zip(axes, shape, strict=True))


def identity_depth_index(source_layers: int, target_layers: int) -> list[int]:
    """The source layer each target layer copies under ``depth="identity"``: source layer
    ``i`` fills target layers ``floor(j * S / T) == i`` (its first copy, then repeats)."""
    return [j * source_layers // target_layers for j in range(target_layers)]


def layer_map(recipe: Recipe, source_layers: int, target_layers: int) -> list[int]:
    """The source layer each target layer is made from under ``recipe``: the one it repeats
    under ``depth="identity"`` (:func:`identity_depth_index`), else the method's
    (:meth:`zoo.methods.Method.depth_map`)."""
    if recipe.depth == "identity" and target_layers > source_layers:
        return identity_depth_index(source_layers, target_layers)
    return get(recipe.method).depth_map(source_layers, target_layers)


def deepen_by_identity(
    y: torch.Tensor, key: str, axes: tuple[str, ...], target_layers: int
) -> torch.Tensor:
    """``y`` (at the source's depth) taken to ``target_layers`` by the identity rule: every
    layer repeated in place, the repeats of a residual writer zeroed."""
    import torch

    axis = axes.index("layers")
    index = identity_depth_index(y.shape[axis], target_layers)
    out = y.index_select(axis, torch.tensor(index, device=y.device))
    if key in RESIDUAL_WRITERS:
        repeats = [j for j in range(1, target_layers) if index[j] == index[j - 1]]
        out.index_fill_(axis, torch.tensor(repeats, dtype=torch.long, device=y.device), 0)
    return out


def amplitude(spec: SignalSpec, recipe: Recipe) -> Amplitude:
    """The amplitude rule ``recipe`` gives a signal like ``spec`` (:mod:`zoo.methods.amplitude`)."""
    return _amplitude(recipe.method, spec.kind, spec.fan_in_axis, recipe.rescale, recipe.norm)


# A rule is immutable and a function of these five names: each signal of every derivation
# asks for its own several times.
@functools.lru_cache(maxsize=256)
def _amplitude(method: str, kind: str, fan_in_axis, rescale: str, norm: str) -> Amplitude:
    return Amplitude.of(get(method), kind, fan_in_axis, rescale=rescale, norm=norm)


def derive_signal(
    x: torch.Tensor,
    spec: SignalSpec,
    shape: tuple[int, ...],
    recipe: Recipe,
    *,
    reference: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    unit_maps: tuple[torch.Tensor | None, ...] | None = None,
    whole_moments: bool = False,
    result_std: float | None = None,
    raw: bool = False,
    amplitude_version: int | None = None,
    source_count: int | None = None,
    dtype_version: int | None = None,
) -> torch.Tensor:
    """Resize one source signal ``x`` to ``shape`` by ``recipe``.

    ``reference`` is the source signal's (mean, std), used by the amplitude rule
    (:func:`amplitude`): unless it is ``none``, normalization parameters are affinely
    matched to the source's mean and std by every method that transfers, so a LayerNorm
    gain scale cannot pass for a better transfer. ``unit_maps``, ``result_std`` and
    ``raw``: see :func:`zoo.methods.resize`; ``amplitude_version``: the rule of that
    version of :mod:`zoo.methods.amplitude` (default: the current one);
    ``source_count``: the whole source signal's number of values when ``x`` is a block
    of its rows (default: ``x``'s); ``dtype_version``: the rule of that
    :data:`DTYPE_VERSION` for the dtype the signal is derived and returned in
    (:func:`compute_dtype`).
    """
    version = CURRENT if amplitude_version is None else amplitude_version
    same = tuple(x.shape) == tuple(shape)
    if same and (get(recipe.method).reads_source or not x.is_floating_point()) and not raw:
        # Copied whole (cast to the dtype written, rounded once); integer buffers pass
        # through every method, scratch's too.
        return x.clone()
    x = in_compute_dtype(x, recipe, dtype_version)
    rule = amplitude(spec, recipe)
    count = x.numel() if source_count is None else source_count
    y = resize(
        x,
        shape,
        method=recipe.method,
        wavelet=recipe.wavelet or "haar",
        rescale=rule.rescale,
        reference_std=rule.reference_std(reference, count, version),
        fan_in_axes=rule.fan_in_axes,
        layer_axis=spec.axes.index("layers") if "layers" in spec.axes else None,
        generator=generator,
        unit_maps=unit_maps,
        kind=spec.kind,
        whole_moments=whole_moments,
        result_std=result_std,
        raw=raw,
    )
    return y if raw else rule.finish(y, reference, x.shape, version=version)


def needs_reference(spec: SignalSpec, recipe: Recipe) -> bool:
    """Whether :func:`derive_signal` reads ``reference`` for this signal and recipe, so a
    caller can skip computing the source's statistics (a full pass over it) otherwise."""
    return amplitude(spec, recipe).needs_reference


def signal_stats(x: torch.Tensor, *, whole: bool = False) -> tuple[float, float]:
    """(mean, std) of a signal in float64, a block at a time (:mod:`zoo.transforms.moments`):
    stable across devices to ~1e-12 and, on the CPU, the same bits at any thread count.
    ``whole``: the rule of transform versions up to 3 (one float64 copy of the signal), for
    re-deriving what they recorded."""
    from zoo._threads import one_thread
    from zoo.transforms.moments import mean_std

    if not whole:
        return mean_std(x)
    x64 = x.double()
    with one_thread(x64):
        std = float(x64.std()) if x.numel() > 1 else 0.0
        mean = float(x64.mean())
    return (0.0 if math.isnan(mean) else mean), (0.0 if math.isnan(std) else std)
