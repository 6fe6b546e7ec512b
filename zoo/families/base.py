"""What every architecture family tells zoo: its signals and how its config resizes.

A *signal* is one tensor made of same-role parameters: the per-layer matrices of one role
stacked over depth into ``(layers, out, in)``, per-layer vectors into ``(layers, d)``, or a
tensor outside the layer stack (embeddings, final norms, heads) on its own. Each axis of a
signal carries a *role* name. Roles that appear in :meth:`Family.axis_sizes` (``layers``,
``hidden``, ``ffn``, ``kv``...) change with the target size; any other role (``vocab``,
``positions``, ``classes``, ``channels``...) never changes by transform.

Transforms never see HF names: a family turns a state dict into signals
(:meth:`Family.to_signals`) and signals of a target size back into a state dict
(:meth:`Family.from_signals`). Adding a family is one module in this package plus its
test; nothing in ``zoo.transforms`` changes. A llama-shaped decoder is not even a module:
it is one :class:`zoo.families.decoder.Decoder` declaration in ``zoo/families/decoders.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

# How a signal's amplitude should be treated by rescaling rules: matrices (``linear``, and
# task/LM ``head`` s) have a fan-in axis, norm gains stay near 1, biases and embeddings are
# plain vectors/tables. ``norm_bias`` covers every zero-centred normalization parameter:
# LayerNorm biases, and gains stored as an offset from one (Gemma's RMSNorm scales by
# ``1 + w``), which a from-scratch init sets to zero, not one. Pass-through signals (saved
# buffers such as ``position_ids``, unknown tensors whose sizes cannot change) are
# ``embedding`` s whose axes are all fixed roles, so no transform ever touches them.
SignalKind = Literal["linear", "bias", "norm_weight", "norm_bias", "embedding", "head"]


@dataclass(frozen=True)
class Signal:
    """A group of same-role parameters as one tensor, with the role of each axis.

    Attributes:
        tensor: the stacked parameters, matrices in ``(out, in)`` order (HF Linear order;
            GPT-2's Conv1D ``(in, out)`` is transposed by its family).
        axes: one role name per axis of ``tensor``.
        kind: what the parameters are, for amplitude rules.
        fan_in_axis: index of the input axis for ``linear`` and ``head`` signals (the last
            axis, except ViT's patch convolution ``(hidden, channels, patch, patch)``, whose
            fan-in starts at axis 1 and spans only fixed axes), else ``None``.
    """

    tensor: torch.Tensor
    axes: tuple[str, ...]
    kind: SignalKind
    fan_in_axis: int | None = None

    def __post_init__(self) -> None:
        if len(self.axes) != self.tensor.dim():
            raise ValueError(
                f"signal has {self.tensor.dim()} axes but {len(self.axes)} roles {self.axes}"
            )

    @property
    def spec(self) -> SignalSpec:
        """This signal without its tensor."""
        return SignalSpec(self.axes, self.kind, self.fan_in_axis)


@dataclass(frozen=True)
class SignalSpec:
    """A signal without its tensor: what a learngene records about each group."""

    axes: tuple[str, ...]
    kind: SignalKind
    fan_in_axis: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ties:
    """How the tensors of a checkpoint that transformers ties to another (an LM head to
    the word embedding, under ``tie_word_embeddings``) are derived (see
    :meth:`Family.tied_copies`).

    Attributes:
        copies: tensor name -> its signal, for each tied tensor the file holds as the very
            bytes of the one it is tied to: transformers loads one tensor, so it is derived
            as the tied case is (not read, not written).
        untie: the file holds a tied tensor that is not the one it is tied to, which
            transformers does not tie either: a target that writes it says
            ``tie_word_embeddings: false``, or re-tying it would change its function.
    """

    copies: Mapping[str, str] = field(default_factory=dict)
    untie: bool = False


@dataclass(frozen=True)
class TargetSize:
    """A requested size; ``None`` fields take the family's defaults."""

    layers: int
    hidden: int
    heads: int | None = None
    intermediate: int | None = None
    kv_heads: int | None = None


def layers_by_position(source_layers: int, target_layers: int) -> list[int]:
    """The source layer at each target layer's place along depth: with both stacks laid
    over the same span, the source layer under the target layer's centre (the deeper of
    two when the centre falls on their boundary).

    Where a method resamples depth as any other axis (dwt, dct), a target layer blends
    the source layers around its place; no single one makes it, and this is the one it
    is centred on. Halving a stack centres each target layer on the boundary between the
    two layers it blends (haar takes them equally): the deeper one is taken so that a
    pattern closing each period with a full-attention layer (Gemma's) keeps it.

    Example:
        >>> layers_by_position(4, 8), layers_by_position(6, 4), layers_by_position(4, 2)
        ([0, 0, 1, 1, 2, 2, 3, 3], [0, 2, 3, 5], [1, 3])
    """
    return [(2 * j + 1) * source_layers // (2 * target_layers) for j in range(target_layers)]


class Family(ABC):
    """One architecture family (bert, gpt2, ...)."""

    #: registry name, e.g. ``"bert"``
    name: str
    #: config.json ``model_type`` values this family reads
    model_types: tuple[str, ...]

    @abstractmethod
    def axis_sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        """Sizes of the roles that can change, e.g. ``{"layers": 12, "hidden": 768, ...}``."""

    @abstractmethod
    def target_config(
        self,
        config: Mapping[str, Any],
        target: TargetSize,
        layer_map: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """The source ``config`` rewritten for ``target``.

        Defaults keep head_dim and the source's intermediate/hidden ratio. Raises
        :class:`zoo.errors.InvalidTargetError` before any work when the request cannot be
        built, with a message that says what would work.

        ``layer_map``: the source layer each target layer is made from (its weights copied
        or derived from it), which the config's per-layer fields (attention types) follow,
        so a layer computes as the layer it came from; ``None``: the source layer at each
        target layer's place along depth (:func:`layers_by_position`).
        """

    @abstractmethod
    def to_signals(
        self,
        state: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        *,
        partial: bool = False,
        layers: Sequence[int] | None = None,
    ) -> dict[str, Signal]:
        """Group a state dict into signals. Every tensor lands in exactly one signal.

        A head tied to the embeddings is its own signal when the state has it and absent
        when it does not (``save_pretrained`` omits it), so round trips keep the keys.
        ``partial``: ``state`` is some whole groups (:meth:`group_of`) of a checkpoint, so
        required tensors it lacks are not refused. ``layers`` (with ``partial``): ``state``
        holds per-layer groups for these layers only, stacked in this order.
        """

    @abstractmethod
    def group_of(self, tensor_name: str) -> tuple[str, ...]:
        """The signals a tensor feeds together with the other tensors of its group: the
        smallest unit that :meth:`to_signals` and :meth:`from_signals` can convert on its
        own, which lets a model be derived and written group by group."""

    @abstractmethod
    def signal_group(self, signal: str) -> tuple[str, ...]:
        """The group (see :meth:`group_of`) that ``signal`` belongs to."""

    def layer_index(self, tensor_name: str) -> int | None:
        """The layer a per-layer weight belongs to (``None`` for other tensors), so a
        caller can read and write one layer of a group at a time."""
        return None

    def is_buffer(self, name: str) -> bool:
        """Whether the tensor ``name`` is a buffer transformers rebuilds from the config
        (position ids, causal masks, rotary frequencies) rather than a weight: older
        versions saved such buffers, current ones drop them on ``save_pretrained``."""
        return False

    def tied_head_inputs(
        self, config: Mapping[str, Any], kinds: Mapping[str, str], names: Collection[str]
    ) -> tuple[str, ...]:
        """The normalization signals whose output only an output head tied to the
        embeddings reads, in a model of ``config`` whose signals have ``kinds`` (read from
        tensors ``names``); ``()`` when its head is not tied (or the family names none).

        A width grown by repeating units repeats the hidden state the head reads, and a
        tied head's weights are the embedding's, which a lookup table is not divided in:
        its logits would come out multiplied by the width's growth. Dividing these norms'
        outputs instead (as a fan-in) keeps them the source's.
        """
        return ()

    def tied_copies(self, config: Mapping[str, Any], records: Collection[Any]) -> Ties:
        """How a checkpoint of ``config`` whose tensors have ``records`` (``name``,
        ``dtype``, ``shape``, ``digest``) holds the tensors transformers ties (see
        :class:`Ties`): a tied tensor saved beside the one it is tied to (many checkpoints
        store both) is that tensor when the bytes are the same, and untied otherwise."""
        return Ties()

    def tied_partners(self, config: Mapping[str, Any], names: Collection[str]) -> dict[str, str]:
        """Of tensor ``names``, each one transformers ties to another under ``config`` (an
        LM head, its decoder bias) -> the name it is tied to (the word embedding): where a
        checkpoint may hold that pair's bytes once. ``{}`` when the config ties nothing
        (or the family names no ties)."""
        return {}

    def attention_heads(self, config: Mapping[str, Any]) -> tuple[int, int] | None:
        """(query heads, key/value heads) of a model of ``config``, or None when it has no
        attention (or the family does not say). A method that copies whole heads reads it:
        a head's dimensions are one unit of attention, and a key/value head serves a fixed
        group of query heads."""
        return None

    def unchanged_outputs(self, signal: str) -> str | None:
        """How :meth:`from_signals` passes ``signal`` through without copying it.

        ``"whole"``: the output tensor is the signal itself; ``"layers"``: the outputs are
        its slices along axis 0, one per layer; ``None``: rebuilt (joined, transposed...).
        Lets a caller hash outputs while other signals are still being computed; ``None``
        is always a safe answer.
        """
        return None

    def first_layers(
        self, config: Mapping[str, Any], names: Sequence[str], layers: int
    ) -> tuple[dict[str, Any], set[str]] | None:
        """The config and the tensor names of the model made of the first ``layers`` layers
        of one with ``config`` and tensors ``names`` (weight selection keeps exactly those),
        so a caller can read no more; ``None`` when the family cannot tell."""
        return None

    @abstractmethod
    def from_signals(
        self,
        signals: Mapping[str, torch.Tensor],
        config: Mapping[str, Any],
        *,
        part_of: Collection[str] | None = None,
        layers: Sequence[int] | None = None,
        legacy_norms: Collection[str] = (),
    ) -> dict[str, torch.Tensor]:
        """Rebuild an HF state dict for ``config`` from signals already at its sizes.

        The names are those ``save_pretrained`` writes for ``config["architectures"][0]``,
        which ``from_pretrained`` loads without missing or unexpected keys. ``part_of``:
        ``signals`` are whole groups of the model whose signals it names; only their
        tensors are built. ``layers`` (with ``part_of``): the signals are per-layer groups
        holding these layers of the target only, in this order. ``legacy_norms``: the
        signals written under the TensorFlow-era LayerNorm names (``LayerNorm.gamma`` /
        ``.beta``) that transformers also loads (:meth:`legacy_norm_signals`).
        """

    def legacy_norm_signals(self, names: Iterable[str]) -> frozenset[str]:
        """The signals a checkpoint with tensors ``names`` stores under the TensorFlow-era
        LayerNorm names, which :meth:`from_signals` then writes so too."""
        return frozenset()
