"""What a method is: what it can do, which recipe options it reads, how it resizes a signal.

A method is pure: a signal in, a signal out, no files and no database. It declares its
abilities as class attributes, so the CLI, a recipe's validation, the target check and the
defaults read them instead of keeping lists of names. Importing a method costs nothing:
torch and the transforms are imported when a signal is first resized (``zoo --help`` stays
fast).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

#: Every recipe option a method may read (:class:`zoo.derive.Recipe`).
OPTIONS = ("wavelet", "rescale", "norm", "depth", "order", "seed")


class Method:
    """One way to bring a model's signals to a new size.

    Attributes:
        name: the one spelling users, recipes and lineage records use.
        grows, shrinks: whether it can make an axis longer, shorter.
        integer_multiples: whether every growing size must be a whole multiple of the
            source's.
        learngene: whether it reads a learngene (``zoo extract`` makes one for it) as well
            as a source; the others always read the source.
        reads_source: whether it transfers the source's values (scratch reads only shapes).
        random: whether it draws random numbers, from one generator seeded by ``seed``:
            scratch signal by signal in name order, net2net its copy maps before any
            signal (:class:`zoo.methods.net2net.CopyMaps`).
        first_layers: whether a shallower target keeps the source's first layers, so only
            those need to be read.
        in_source_dtype: whether :meth:`resize` may be handed the signal in its own dtype
            (bf16, fp16) and give the bits of computing in float32 and casting back: its
            elements are the source's, copied, or computed in float32 and rounded once.
            Saves the float32 passes over a large result.
        layer_local: whether each target layer is made from one source layer alone
            (:meth:`source_layer`), element by element (copies, selections, divisions by a
            whole number), so a signal can be derived one target layer at a time and give
            the same bits as derived whole.
        keeps_function: whether a grown model computes the source's function (copies of
            whole units, their readers divided), where each attention head is copied
            whole: ``zoo materialize`` warns where the target regroups them.
        options: the recipe options that change its result (of :data:`OPTIONS`).
    """

    name: ClassVar[str]
    grows: ClassVar[bool] = True
    shrinks: ClassVar[bool] = True
    integer_multiples: ClassVar[bool] = False
    learngene: ClassVar[bool] = False
    reads_source: ClassVar[bool] = True
    random: ClassVar[bool] = False
    first_layers: ClassVar[bool] = False
    in_source_dtype: ClassVar[bool] = False
    layer_local: ClassVar[bool] = False
    keeps_function: ClassVar[bool] = False
    options: ClassVar[frozenset[str]] = frozenset({"norm", "depth", "order"})

    def resize(
        self,
        x: torch.Tensor,
        target: list[int],
        *,
        fan_in_axes: Sequence[int],
        layer_axis: int | None,
        kind: str,
        wavelet: str,
        generator: torch.Generator | None,
        unit_maps: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``x`` (floating point, in its compute dtype) at ``target``, before any amplitude
        rule; arguments already checked by :func:`zoo.methods.resize`.

        Args:
            fan_in_axes: input-width axes (for HF Linear ``(L, out, in)``: the last one).
            layer_axis: the depth axis, if any.
            kind: the signal's kind (``linear``, ``bias``, ``norm_weight``...).
            wavelet: the ``wavelet`` option.
            generator: the random state of a method that draws.
            unit_maps: the copy map of each axis, for a method that copies units
                (:class:`zoo.methods.net2net.CopyMaps`).
        """
        raise NotImplementedError

    def source_layer(self, layer: int, source_layers: int, target_layers: int) -> int:
        """The source layer target ``layer`` is made from, for a :attr:`layer_local` method."""
        raise NotImplementedError(f"{self.name} is not layer-local")

    def depth_map(self, source_layers: int, target_layers: int) -> list[int]:
        """The source layer each target layer is made from along depth: the one it copies,
        or, for a method that resamples depth as any other axis, the one at its place
        (:func:`zoo.families.base.layers_by_position`). A target's per-layer config
        (attention types) follows it."""
        if self.layer_local:
            s, t = source_layers, target_layers
            return [self.source_layer(j, s, t) for j in range(t)]
        from zoo.families.base import layers_by_position

        return layers_by_position(source_layers, target_layers)

    def uneven(self, source: Mapping[str, int], target: Mapping[str, int]) -> list[str]:
        """The sizes that grow by other than a whole multiple, when the method needs whole
        multiples (else none)."""
        if not self.integer_multiples:
            return []
        return [r for r, n in target.items() if n > source.get(r, n) and n % source[r]]

    def __repr__(self) -> str:
        return f"<method {self.name}>"
