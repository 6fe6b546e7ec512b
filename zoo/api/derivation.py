"""Deriving a target group by group: each finished tensor goes to a sink, then is freed.

A *group* is the smallest part of a model that converts between tensors and signals on
its own (:meth:`zoo.families.base.Family.group_of`: one role's signal stacked over depth,
or GPT-2's fused q/k/v). For each group the learngene's bands are read (or the source's
tensors, when the bands do not suffice), its signals are resized by the recipe, turned
into the target's tensors, and each tensor is handed to :class:`Sink`, which hashes it and
writes it to a folder, the blob store or memory. At most ``workers`` groups are in memory
at once, so the peak is bounded by the largest group's working set, not by the model.

A method that makes each target layer from one source layer alone
(:attr:`zoo.methods.Method.layer_local`: weight selection, HyperCloning) derives a
per-layer group one source layer at a time, and each of that layer's target layers one
at a time: then the working set is one layer's, whatever the depth. So do dwt and dct
when the depth is kept (each layer is resized on its own), in two passes when the
amplitude rule scales by the whole result's std.

A tensor that is one signal written as it is (an embedding, an LM head) goes to a sink
that writes a folder a block of rows at a time, each block hashed and written at its place
as it is made (:class:`RowWriter`), so that result is never whole in memory either.

The arithmetic of each signal does not depend on how the model is cut into groups or how
many run at once: the same recipe gives the same bits on the same device.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.db import queries
from zoo.db.entities import ArtifactInfo, TensorRecord
from zoo.derive import (
    Recipe,
    amplitude,
    compute_dtype,
    deepen_by_identity,
    derive_signal,
    in_compute_dtype,
    needs_reference,
    target_shape,
)
from zoo.families.base import Signal, SignalSpec, Ties
from zoo.methods import DCT, DWT, get

from . import tensors as tio
from .learngene_format import band_name
from .plan import Plan

if TYPE_CHECKING:
    import torch

    from zoo.methods.net2net import CopyMaps

    from .tensors import KnownDigests

# A signal derived a block of rows at a time (see Derivation._row_chunk) takes blocks of
# about this many bytes of float32 result: its temporaries stay a few hundred MB.
_ROW_CHUNK_BYTES = 64 << 20


def _layers_in_flight() -> int:
    """Layers of one two-pass group resized side by side (one layer's transform runs
    mostly on one core)."""
    return min(os.cpu_count() or 1, 8)


# Finished groups of a random method (scratch, net2net) are built into tensors together
# until their results hold this many elements.
_BATCH_ELEMENTS = 4 << 20

# Bytes per element of a group's working set, per source and per target element: the
# float32 copies the transforms compute in, their temporaries and the result's own dtype.
_SOURCE_BYTES, _TARGET_BYTES = 8, 12


@dataclass(frozen=True)
class SignalMeta:
    """A signal without its values: what is needed to size and plan its derivation."""

    axes: tuple[str, ...]
    kind: str
    fan_in_axis: int | None
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class Group:
    """Signals derived together and the target tensors they make."""

    signals: tuple[str, ...]
    #: target tensor name -> (dtype, shape), in the dtype they are written in
    outputs: dict[str, tuple[torch.dtype, tuple[int, ...]]]
    #: source tensors to read when the source (not a learngene) is transformed
    source_names: tuple[str, ...]
    source_elements: int
    target_elements: int
    #: derived layer by layer: (source layer, the target layers made from it) in turn;
    #: empty when the group is derived whole
    chunks: tuple[tuple[int, tuple[int, ...]], ...] = ()
    #: its layers are derived in turn after a first pass that takes the std of every
    #: layer's raw result (the std and fan rules scale a signal by its whole std)
    two_pass: bool = False
    #: its working set when each signal is derived a block of rows at a time (0: it is
    #: not): source and result whole in their dtype, and one block's float32 work
    by_rows: int = 0

    @property
    def working_set(self) -> int:
        """Bytes this group holds at its peak (an estimate that errs high)."""
        if self.by_rows:
            return self.by_rows
        if self.chunks:  # one source layer and one target layer at a time
            source = self.source_elements // len(self.chunks)
            target = self.target_elements // sum(len(js) for _, js in self.chunks)
            layer = _SOURCE_BYTES * source + _TARGET_BYTES * target
            return layer * _layers_in_flight() if self.two_pass else layer
        return _SOURCE_BYTES * self.source_elements + _TARGET_BYTES * self.target_elements


class Derivation:
    """The target of ``plan``, planned group by group; :meth:`run` derives it.

    Args:
        reg: the registry the learngene or source is read from.
        plan: what to derive (:func:`zoo.api.plan.make_plan`).
        dev: the torch device the transforms run on.
        known: learns the digests of what is read, so outputs that are read tensors
            unchanged are not hashed again.
        recorded_layer_digests: trust the per-layer digests a learngene recorded for its
            raw bands (verification turns this off and hashes every output itself).
        read_virtual: ``(info, records, dev, known) -> state`` for a virtual source, whose
            weights are re-derived (:func:`zoo.api.materialize.virtual_weights`).
    """

    def __init__(
        self,
        reg,
        plan: Plan,
        dev,
        *,
        known: KnownDigests,
        recorded_layer_digests: bool = True,
        read_virtual=None,
    ) -> None:
        import torch

        self.reg, self.plan, self.dev, self.known = reg, plan, dev, known
        self.family = plan.family
        self._recorded_layer_digests = recorded_layer_digests
        self._read_virtual = read_virtual
        self._lock = threading.Lock()
        self._all_source: dict | None = None
        lg = plan.learngene
        records = self._source_records()
        # The source's LayerNorms stored under TensorFlow-era names are written so too.
        self._legacy_norms = self.family.legacy_norm_signals(r.name for r in records)
        # A tied copy the file holds is the tensor it is tied to: neither read nor written.
        copies = tied_copies(plan, records).copies
        records = [r for r in records if r.name not in copies]
        self._records, self._source_config = _what_to_read(plan, records)
        self._stored = {t.name: t for t in lg.tensors} if lg is not None else {}
        self._group_source: dict[tuple[str, ...], dict] = {}
        if lg is not None:
            self.metas = {
                k: SignalMeta(
                    tuple(m["axes"]),
                    m["kind"],
                    m["fan_in_axis"],
                    tuple(m["shape"]),
                    getattr(torch, m["dtype"]),
                )
                for k, m in lg.info["signals"].items()
                if k not in copies.values()
            }
        else:
            self.metas = _source_metas(
                self.family, plan.source.content_hash, self._records, self._source_config
            )
        self.specs = _specs(self.metas, plan, [r.name for r in self._records])

    @functools.cached_property
    def groups(self) -> list[Group]:
        """Every group, each with its target tensors planned (on the meta device: a
        target of many layers takes seconds; see :attr:`least_target_bytes`). Planned
        once per source, target and recipe (:func:`_layout_key`): the same request with
        another seed, or again, has the same groups."""
        key = _layout_key(self.plan)
        groups = _LAYOUTS.get(key)
        if groups is None:
            groups = self._plan_groups()
            _LAYOUTS.put(key, groups)
        return list(groups)

    def _plan_groups(self) -> tuple[Group, ...]:
        family = self.family
        names_of: dict[tuple[str, ...], list[str]] = {}
        for r in self._records:
            names_of.setdefault(family.group_of(r.name), []).append(r.name)
        elements = {r.name: math.prod(r.shape) for r in self._records}
        seen: set[str] = set()
        members_of: list[tuple[str, ...]] = []
        for key in sorted(self.metas):
            if key in seen:
                continue
            members = tuple(k for k in family.signal_group(key) if k in self.metas) or (key,)
            seen.update(members)
            members_of.append(members)
        outputs = self._outputs(members_of)
        groups: list[Group] = []
        for members in members_of:
            names = tuple(names_of.get(members, ()))
            groups.append(
                self._group(members, names, sum(elements[n] for n in names), outputs[members])
            )
        return tuple(groups)

    def _outputs(self, members_of: list[tuple[str, ...]]) -> dict[tuple[str, ...], dict]:
        """Each group's target tensors (name -> (dtype, shape), in the order the group
        writes them), from one pass of the family's state-dict builder over every signal's
        target shape on the meta device: one pass, not one per group, as each pass reads
        the config and the rule table again."""
        import torch

        plan, family = self.plan, self.family
        meta = {
            k: torch.empty(
                target_shape(m.axes, m.shape, plan.target_sizes), dtype=m.dtype, device="meta"
            )
            for k, m in self.metas.items()
        }
        built = family.from_signals(
            meta, plan.target_config, part_of=self.metas, legacy_norms=self._legacy_norms
        )
        group_of = {k: members for members in members_of for k in members}
        outputs: dict[tuple[str, ...], dict] = {members: {} for members in members_of}
        for name, t in built.items():  # a tensor's group is the one its name is read into
            members = group_of[family.group_of(name)[0]]
            outputs[members][name] = (output_dtype(t.dtype, plan.recipe), tuple(t.shape))
        return outputs

    @property
    def least_target_bytes(self) -> int:
        """A lower bound on :attr:`target_bytes` from the signals' target shapes alone,
        in milliseconds: every target tensor is made of its signals' values (a tied or
        joined tensor only adds to them), so an output that this already does not fit
        is refused before the groups are planned."""
        sizes = self.plan.target_sizes
        return sum(
            math.prod(target_shape(m.axes, m.shape, sizes))
            * output_dtype(m.dtype, self.plan.recipe).itemsize
            for m in self.metas.values()
        )

    def _source_records(self) -> list:
        return source_records(self.reg, self.plan)

    def _group(self, members, names, source_elements, outputs) -> Group:

        plan = self.plan
        target = sum(
            math.prod(target_shape(self.metas[k].axes, self.metas[k].shape, plan.target_sizes))
            for k in members
        )
        chunks, two_pass = self._layer_chunks(members, names, outputs)
        by_rows = 0 if chunks else self._by_rows_working_set(members)
        return Group(members, outputs, names, source_elements, target, chunks, two_pass, by_rows)

    def _by_rows_working_set(self, members) -> int:
        """:attr:`Group.by_rows` of a group of signals ``members``; 0 unless every one is
        derived a block of rows at a time (see :meth:`_row_chunk`)."""

        whole = block = 0
        for k in members:
            meta = self.metas[k]
            tshape = target_shape(meta.axes, meta.shape, self.plan.method_sizes)
            rows = self._row_chunk(k, tshape)
            if not rows:
                return 0
            size = meta.dtype.itemsize
            whole += size * (math.prod(meta.shape) + math.prod(tshape))
            row = _SOURCE_BYTES * math.prod(meta.shape[1:]) + _TARGET_BYTES * math.prod(tshape[1:])
            block = max(block, rows * row)
        return whole + block

    def _layer_chunks(self, members, names, outputs) -> tuple[tuple, bool]:
        """How a per-layer group is derived a layer at a time (empty: whole), and whether
        it takes two passes. Only where that gives the same bits, from the source's own
        stored order and layers: a layer-local method with an amplitude rule that reads
        nothing of the whole signal; or dwt and dct with the depth kept, which resize
        each layer on its own (a rule that reads the result's std takes it in a first
        pass, block by block as over the whole signal)."""

        plan, family = self.plan, self.family
        method = get(plan.recipe.method)
        if (
            not (method.layer_local or method.learngene)  # scratch, net2net: whole
            or plan.deepen
            or self._needs_whole_source()
            or not names
        ):
            return (), False
        rules = [amplitude(self.specs[k], plan.recipe) for k in members]
        if any(self.metas[k].axes[:1] != ("layers",) for k in members):
            return (), False
        if None in [family.layer_index(n) for n in (*names, *outputs)]:
            return (), False
        source, target = self.metas[members[0]].shape[0], plan.method_sizes["layers"]
        if method.layer_local:
            if any(r.needs_reference or r.rescale != "none" for r in rules):
                return (), False
            made_from: dict[int, list[int]] = {}
            for j in range(target):
                made_from.setdefault(method.source_layer(j, source, target), []).append(j)
            return tuple((i, tuple(js)) for i, js in sorted(made_from.items())), False
        if (
            source != target
            or not method.learngene
            or plan.legacy_whole_moments  # recorded from the whole signal: re-derived so
            or any(r.match_moments for r in rules)
            or not all(self._matrix_layers(k) and self._from_source(k) for k in members)
        ):
            return (), False
        two_pass = any(r.scales_by_std for r in rules)
        return tuple((i, (i,)) for i in range(source)), two_pass

    def _matrix_layers(self, key: str) -> bool:
        """Whether each layer of signal ``key`` is a matrix (or more) of at least two rows
        and columns at both sizes. A layer's products then keep the shape they have in the
        whole signal's, less the batch; a single row (a bias's or norm gain's layer)
        becomes a matrix-vector product, which MKL rounds otherwise. Those are small and
        derived whole."""

        meta = self.metas[key]
        shape = target_shape(meta.axes, meta.shape, self.plan.method_sizes)
        return len(meta.shape) >= 3 and min(*meta.shape[1:], *shape[1:]) >= 2

    def _from_source(self, key: str) -> bool:
        """Whether signal ``key`` is computed from the source signal (not from a
        learngene's stored band or block; see :func:`derive_one`)."""

        lg = self.plan.learngene
        if lg is None:
            return True
        meta = lg.info["signals"][key]
        if lg.info.get("method") != DWT.name or meta.get("full"):
            return False
        if not _same_wavelet(self.plan):
            return True
        tshape = target_shape(meta["axes"], tuple(meta["shape"]), self.plan.method_sizes)
        stored = {t.name: tuple(t.shape) for t in lg.tensors}
        return all(
            stored.get(band_name(key, level)) != tuple(tshape) for level in meta.get("levels", [])
        )

    # --- sizes, before any work ------------------------------------------------------------

    @property
    def layout(self) -> dict[str, tuple[str, tuple[int, ...], int]]:
        """Every target tensor's (safetensors dtype code, shape, bytes), by name."""
        from zoo.checkpoint import dtype_code

        return {
            name: (dtype_code(dt), shape, math.prod(shape) * dt.itemsize)
            for g in self.groups
            for name, (dt, shape) in g.outputs.items()
        }

    @property
    def target_bytes(self) -> int:
        return sum(nbytes for _, _, nbytes in self.layout.values())

    @property
    def largest_working_set(self) -> int:
        return max((g.working_set for g in self.groups), default=0)

    # --- the work -------------------------------------------------------------------------

    def run(self, emit: Callable[[str, torch.Tensor], None], *, workers: int | None = None) -> None:
        """Derive every group and ``emit(name, tensor)`` each target tensor, from up to
        ``workers`` threads at once; a group's tensors are dropped once emitted."""
        import torch

        if get(self.plan.recipe.method).random:
            # Scratch (and net2net under version 1) draws from one generator, signal by
            # signal in name order: that order fixes the numbers, so these run one signal
            # at a time. Net2net's copy maps are drawn before any signal.
            generator = torch.Generator().manual_seed(self.plan.recipe.seed)
            maps = self._copy_maps
            group_of = {k: g for g in self.groups for k in g.signals}
            pending: dict[str, torch.Tensor] = {}
            # Finished groups wait until their results add up to a batch: one pass of the
            # family's state-dict builder for them all instead of one per group (a small
            # model's groups are one batch).
            ready: list[Group] = []

            def build() -> None:
                self._emit(ready, {k: pending.pop(k) for g in ready for k in g.signals}, emit)
                ready.clear()

            for key in sorted(self.metas):
                g = group_of[key]
                pending[key] = self._signal(key, generator, g, maps)
                if all(k in pending for k in g.signals):
                    ready.append(g)
                    if sum(r.target_elements for r in ready) >= _BATCH_ELEMENTS:
                        build()
            if ready:
                build()
            return
        if self._needs_whole_source():
            self._whole_source()  # load once, before the threads need it
        self._copy_maps  # noqa: B018 (drawn once, before the threads read them)
        work = [(g, c) for g in self.groups if not g.two_pass for c in g.chunks or [None]]
        cost = [g.working_set for g, _ in work]

        rows = getattr(emit, "rows", None)  # a sink that takes a tensor a block at a time

        def one(item: tuple[Group, tuple | None]) -> None:
            g, chunk = item
            if chunk is not None:
                self._emit_layers(g, *chunk, emit)
                return
            name = self._streamed_output(g) if rows is not None else None
            writer = rows(name, *g.outputs[name]) if name is not None else None
            if writer is not None:
                self._emit_rows(g, writer)
            else:
                values = {k: self._signal(k, None, g, self._copy_maps) for k in g.signals}
                self._emit([g], values, emit)

        # Half the largest group's working set more beside it: two large groups (the
        # embedding and the head) never run side by side; a large one and small ones do.
        budget = 3 * max(cost, default=0) // 2
        tio.parallel_map(one, work, cost=cost, workers=workers, budget=budget)
        # A two-pass group runs its layers side by side on the workers itself; two such
        # groups at once would have twice the layers (and their temporaries) in flight.
        for g in self.groups:
            if g.two_pass:
                self._emit_two_pass(g, emit, workers)

    def _emit(self, groups: list[Group], values: dict, emit) -> None:
        """Build ``groups``' target tensors from their signals ``values`` and emit each."""

        plan = self.plan
        if plan.deepen:
            layers = plan.target_sizes["layers"]
            values = {
                k: deepen_by_identity(v, k, self.metas[k].axes, layers)
                if "layers" in self.metas[k].axes
                else v
                for k, v in values.items()
            }
        tensors = self.family.from_signals(
            values, plan.target_config, part_of=self.metas, legacy_norms=self._legacy_norms
        )
        dtypes = {name: dt for g in groups for name, (dt, _) in g.outputs.items()}
        for name, t in tensors.items():
            emit(name, t.to(dtypes[name]))
        with self._lock:  # the groups' source tensors are not needed again
            for g in groups:
                self._group_source.pop(g.signals, None)

    def _streamed_output(self, group: Group) -> str | None:
        """The one tensor ``group`` makes, when it can be derived and written a block of
        rows at a time (:meth:`_emit_rows`): one signal without a depth axis, written as
        it is (:meth:`zoo.families.base.Family.unchanged_outputs`), that goes by rows
        (:meth:`_row_chunk`). An embedding or an LM head then never has its result whole
        in memory (a 128k-vocabulary 8192-wide one: 2 GB in bf16)."""

        if len(group.signals) != 1 or len(group.outputs) != 1 or group.chunks:
            return None
        key = group.signals[0]
        meta = self.metas[key]
        if "layers" in meta.axes or self.family.unchanged_outputs(key) != "whole":
            return None
        (name, (_, shape)) = next(iter(group.outputs.items()))
        tshape = target_shape(meta.axes, meta.shape, self.plan.method_sizes)
        if tuple(shape) != tuple(tshape) or not self._row_chunk(key, tshape, streamed=True):
            return None
        return name

    def _emit_rows(self, group: Group, writer: RowWriter) -> None:
        """Derive ``group``'s one signal a block of rows at a time and hand each block to
        ``writer``, then free it (see :meth:`_streamed_output`)."""

        key = group.signals[0]
        meta = self.metas[key]
        tshape = target_shape(meta.axes, meta.shape, self.plan.method_sizes)
        reference = self._reference(key, group)
        x = self._source_signal(key, group).tensor
        rows = self._row_chunk(key, tshape, streamed=True)
        for block in _row_blocks(x, self.specs[key], tshape, self.plan, reference, rows):
            writer.write(block.to(writer.dtype))
        writer.close()
        with self._lock:  # the group's source tensors are not needed again
            self._group_source.pop(group.signals, None)

    def _emit_layers(self, group: Group, source_layer: int, layers, emit) -> None:
        """Read ``source_layer`` of ``group`` and derive, one at a time, the target
        ``layers`` made from it (see :meth:`_layer_chunks`)."""

        plan, family, maps = self.plan, self.family, self._copy_maps
        signals = self._layer_signals(group, source_layer)
        # A target layer is a function of its source layer alone, so the layers made from
        # this one hold the same values: derived once, laid out (and written) per layer.
        # Their tensors are views of the same memory, whose digest the sink then knows.
        values = {}
        for k in group.signals:
            meta = self.metas[k]
            shape = target_shape(meta.axes, meta.shape, plan.method_sizes)
            x = signals.pop(k).tensor
            values[k] = derive_signal(
                x,
                self.specs[k],
                (1, *shape[1:]),
                plan.recipe,
                unit_maps=maps.for_signal(k, meta.axes) if maps is not None else None,
                whole_moments=plan.legacy_whole_moments,
                amplitude_version=plan.amplitude_version,
                dtype_version=plan.dtype_version,
            )
        del signals
        for j in layers:
            tensors = family.from_signals(
                values,
                plan.target_config,
                part_of=self.metas,
                layers=[j],
                legacy_norms=self._legacy_norms,
            )
            for name in list(tensors):
                emit(name, tensors.pop(name).to(group.outputs[name][0]))

    def _layer_signals(self, group: Group, layer: int) -> dict:
        """Source layer ``layer`` of ``group``'s signals (each with a first axis of one),
        read from the store on its own."""

        family = self.family
        records = [
            r
            for r in self._records
            if r.name in group.source_names and family.layer_index(r.name) == layer
        ]
        state = tio.load_tensors(self.reg.store, records, device=self.dev, known=self.known)
        return family.to_signals(state, self._source_config, partial=True, layers=[layer])

    def _emit_two_pass(self, group: Group, emit, workers: int | None = None) -> None:
        """A dwt or dct group with the depth kept and a rule that scales by the result's
        std. A first pass reads the source a layer at a time and takes, in layer order,
        the moments of each signal's source (where the rule reads them) and of its raw
        result: the same float64 blocks, so the same bits, as over the whole signal. The
        second reads each layer again, derives, scales and emits it. A few layers are
        alive at a time, never the whole group: reading the source twice costs less than
        holding it (half a GB for one role of a 1B model)."""
        from zoo.transforms.moments import Moments

        plan = self.plan
        workers = min(workers or 8, _layers_in_flight())
        keys = group.signals
        shapes = {}
        for k in keys:
            meta = self.metas[k]
            shape = target_shape(meta.axes, meta.shape, plan.method_sizes)
            shapes[k] = (1, *shape[1:])
        recipe, specs, dtype_version = plan.recipe, self.specs, plan.dtype_version
        sources = {k: Moments() for k in keys if needs_reference(specs[k], recipe)}
        results = {k: Moments() for k in keys if amplitude(specs[k], recipe).scales_by_std}

        def first(i: int) -> tuple[dict, dict]:
            signals = {k: s.tensor for k, s in self._layer_signals(group, i).items()}
            raw = {
                k: derive_signal(
                    signals[k], specs[k], shapes[k], recipe, raw=True, dtype_version=dtype_version
                )
                for k in results
            }
            return {k: signals[k] for k in sources}, raw

        layers = list(range(self.metas[keys[0]].shape[0]))
        # Each layer's working set: a small model's layers run on the calling thread, as
        # starting threads would cost more than they save.
        each = (
            _SOURCE_BYTES * group.source_elements + _TARGET_BYTES * group.target_elements
        ) // max(len(layers), 1)
        for start in range(0, len(layers), workers):
            batch = layers[start : start + workers]
            cost = [each] * len(batch)
            for source, raw in tio.parallel_map(first, batch, cost=cost, workers=workers):
                for k, x in source.items():  # in layer order
                    sources[k].add(x)
                for k, y in raw.items():
                    results[k].add(y)
        references = {k: m.mean_std() for k, m in sources.items()}
        counts = {k: m.result()[0] for k, m in sources.items()}  # of every layer
        result_stds = {k: m.mean_std(correction=0)[1] for k, m in results.items()}

        def layer(i: int) -> None:
            signals = self._layer_signals(group, i)
            values = {
                k: derive_signal(
                    signals.pop(k).tensor,
                    specs[k],
                    shapes[k],
                    recipe,
                    reference=references.get(k),
                    result_std=result_stds.get(k),
                    amplitude_version=plan.amplitude_version,
                    source_count=counts.get(k),
                    dtype_version=dtype_version,
                )
                for k in keys
            }
            tensors = self.family.from_signals(
                values,
                plan.target_config,
                part_of=self.metas,
                layers=[i],
                legacy_norms=self._legacy_norms,
            )
            del values
            for name in list(tensors):
                emit(name, tensors.pop(name).to(group.outputs[name][0]))

        tio.parallel_map(layer, layers, cost=[each] * len(layers), workers=workers)

    # --- one signal -----------------------------------------------------------------------

    def _reference(self, key: str, group: Group) -> tuple[float, float] | None:
        """The source statistics of signal ``key`` that its amplitude rule reads (None
        when it reads none)."""

        plan = self.plan
        if plan.learngene is not None:
            info = plan.learngene.info["signals"][key]
            return (info["mean"], info["std"])
        if not needs_reference(self.specs[key], plan.recipe):
            return None
        # The statistics cost a float64 pass over the signal; most recipes never read them.
        from zoo.derive import signal_stats

        x = self._source_signal(key, group).tensor
        return signal_stats(x, whole=plan.legacy_whole_moments)

    @functools.cached_property
    def _copy_maps(self) -> CopyMaps | None:
        """Net2net's copy maps, one per set of units, drawn before any signal, or the
        attention heads HyperCloning copies otherwise than by tiling (None for another
        method, for a checkpoint recorded when each net2net tensor drew its own or when
        HyperCloning tiled every head, and where tiling keeps the heads' pairing)."""
        from zoo.methods.hypercloning import HYPERCLONING, head_copies
        from zoo.methods.net2net import NET2NET, CopyMaps

        plan = self.plan
        heads = (
            self.family.attention_heads(plan.source.config),
            self.family.attention_heads(plan.target_config),
        )
        if plan.recipe.method == HYPERCLONING.name and plan.hypercloning_version >= 2:
            return head_copies(plan.source_sizes, plan.method_sizes, *heads)
        if plan.recipe.method != NET2NET.name or plan.net2net_version < 2:
            return None
        return CopyMaps.draw(
            plan.recipe.seed,
            plan.source_sizes,
            plan.method_sizes,
            *heads,
            version=plan.net2net_version,
        )

    def _signal(self, key: str, generator, group: Group, maps: CopyMaps | None) -> torch.Tensor:

        plan = self.plan
        meta, spec = self.metas[key], self.specs[key]
        reference = self._reference(key, group)
        tshape = target_shape(meta.axes, meta.shape, plan.method_sizes)
        rows = self._row_chunk(key, tshape)
        if rows:
            x = self._source_signal(key, group).tensor
            return _derive_by_rows(x, spec, tshape, plan, reference, rows)
        return derive_one(
            plan,
            key,
            spec,
            meta.shape,
            tshape,
            reference,
            self._stored_tensor,
            lambda k: self._source_signal(k, group),
            generator,
            unit_maps=maps.for_signal(key, meta.axes) if maps is not None else None,
        )

    def _row_chunk(self, key: str, tshape: tuple[int, ...], *, streamed: bool = False) -> int:
        """Rows per chunk when signal ``key`` is derived a block of rows at a time (0:
        whole): dwt and dct from the source, a first axis that keeps its size and that
        the transform does not touch (an embedding's vocabulary), matrices at both sizes,
        and enough rows for two chunks. Each row is resized on its own, so the bits are the
        whole signal's (see :meth:`_matrix_layers` for why matrices only).

        ``streamed``: for blocks written as they are made (:meth:`_emit_rows`). Then
        weight selection and HyperCloning go by rows too: element by element, they give
        the whole signal's bits a row at a time. Into a whole result they gain nothing
        by rows (they compute in the checkpoint's own dtype, or the whole signal is
        widened anyway: :func:`zoo.derive.compute_dtype`)."""

        plan, meta = self.plan, self.metas[key]
        shape = meta.shape
        method = get(plan.recipe.method)
        if (
            not (method.learngene or (streamed and method.layer_local))
            or plan.legacy_whole_moments
            or len(shape) < 2
            or shape[0] != tshape[0]
            or tuple(shape) == tuple(tshape)
            or min(*shape[1:], *tshape[1:]) < 2
            or amplitude(self.specs[key], plan.recipe).match_moments
            or not self._from_source(key)
        ):
            return 0
        rows = max(2, _ROW_CHUNK_BYTES // (4 * max(math.prod(shape[1:]), math.prod(tshape[1:]))))
        return rows if shape[0] >= 2 * rows else 0

    def _stored_tensor(self, name: str) -> torch.Tensor:

        lg = self.plan.learngene
        t = tio.load_tensors(
            self.reg.store, [self._stored[name]], device=self.dev, known=self.known
        )[name]
        digests = None
        if self._recorded_layer_digests:
            key, _, level = name.rpartition("@dwt")
            meta = lg.info["signals"].get(key, {})
            digests = meta.get("layer_digests", {}).get(level) if level.isdigit() else None
        if digests is not None and len(digests) == t.shape[0]:
            # The band's bytes were just verified; its layers' digests were taken from
            # those same bytes at extraction. Keyed by region and version, they count
            # only for the band's own layers while it is unchanged.
            for part, digest in zip(t.unbind(0), digests, strict=True):
                self.known.add(part, digest)
        return t

    def _needs_whole_source(self) -> bool:
        """A unit order other than stored is chosen from every layer of every signal, and a
        virtual source is re-derived whole: then the source is read once, whole."""
        return self.plan.recipe.order != "stored" or self.plan.source.virtual

    def _whole_source(self) -> dict:
        from zoo.unit_order import ordered

        with self._lock:
            if self._all_source is None:
                plan = self.plan
                if plan.source.virtual:
                    state = self._read_virtual(plan.source, self._records, self.dev, self.known)
                else:
                    state = tio.load_tensors(
                        self.reg.store, self._records, device=self.dev, known=self.known
                    )
                # In the learngene's order when bands are taken from the source.
                signals = self.family.to_signals(state, self._source_config)
                self._all_source = ordered(signals, plan.recipe.order)
            return self._all_source

    def _source_signal(self, key: str, group: Group):
        """The source signal ``key``, read with the rest of its group (once per group)."""

        if (
            not get(self.plan.recipe.method).reads_source
            and self.metas[key].dtype.is_floating_point
        ):
            # An integer buffer (BERT's position ids) is no weight a method draws: it is
            # read, and passes through (zoo.derive.derive_signal).
            return self._shape_only(key)
        if self._needs_whole_source():
            return self._whole_source()[key]
        with self._lock:
            signals = self._group_source.get(group.signals)
        if signals is None:
            names = set(group.source_names)
            records = [r for r in self._records if r.name in names]
            state = tio.load_tensors(
                self.reg.store,
                records,
                device=self.dev,
                known=self.known,
                layer_of=self.family.layer_index,
            )
            signals = self.family.to_signals(state, self._source_config, partial=True)
            with self._lock:
                self._group_source[group.signals] = signals
        return signals[key]

    def _shape_only(self, key: str):
        """What a method that reads only the source's shapes (scratch) is handed for
        signal ``key``: zeros of its shape and dtype that take no memory (one element,
        expanded), so nothing is read from the store or copied."""
        import torch

        meta = self.metas[key]
        zero = torch.zeros((), dtype=meta.dtype, device=self.dev).expand(meta.shape)
        return Signal(zero, meta.axes, meta.kind, meta.fan_in_axis)


def output_dtype(dtype: torch.dtype, recipe: Recipe) -> torch.dtype:
    """The dtype a target tensor is written in: the recipe's for floating-point tensors
    (``auto`` keeps the source's); integer and boolean buffers never change."""
    import torch

    if recipe.dtype == "auto" or not dtype.is_floating_point:
        return dtype
    return getattr(torch, recipe.dtype)


class _Recent:
    """The last few values put, by key, for any thread (least recently used goes first)."""

    def __init__(self, size: int) -> None:
        self._size, self._lock = size, threading.Lock()
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


#: A source's tensor records and signal shapes, by its content hash (which fixes both):
#: materializing from the same source again (another size, method or seed) neither reads
#: its records back nor groups them into signals again.
_SOURCES = _Recent(32)


#: Each plan's groups (:attr:`Derivation.groups`), by :func:`_layout_key`.
_LAYOUTS = _Recent(32)


def _layout_key(plan: Plan) -> tuple:
    """What a plan's groups are a function of: the source's content (its tensors' names,
    shapes and dtypes), the learngene's, whether the source is virtual (it is then read
    whole), both configs, the recipe but its seed (which draws other numbers into the
    same shapes), and the rules of the versions re-derived."""
    import json

    recipe, lg = plan.recipe, plan.learngene
    return (
        plan.source.family,
        plan.source.content_hash,
        plan.source.virtual,
        lg.content_hash if lg is not None else None,
        json.dumps(plan.source.config, sort_keys=True),
        json.dumps(plan.target_config, sort_keys=True),
        dataclasses.replace(recipe, seed=0),  # every field a later recipe adds, too
        (plan.legacy_front_amplitude, plan.legacy_dct_unchanged, plan.legacy_whole_moments),
        (
            plan.amplitude_version,
            plan.net2net_version,
            plan.hypercloning_version,
            plan.dtype_version,
        ),
    )


def source_records(reg, plan: Plan) -> list:
    """The tensor records of the checkpoint ``plan`` resizes (kept by content hash)."""
    return checkpoint_records(reg, plan.source)


def checkpoint_records(reg, source: ArtifactInfo) -> list:
    """The tensor records of the checkpoint ``source`` (kept by content hash)."""
    records = source.tensors or _SOURCES.get(("records", source.content_hash))
    if not records:  # loaded without them (see plan.source_of)
        with reg.session() as session:
            records = tuple(queries.tensor_records(session, source.id))
        _SOURCES.put(("records", source.content_hash), records)
    return list(records)


def tied_copies(plan: Plan, records: list) -> Ties:
    """How the source's tied tensors are derived (:meth:`Family.tied_copies`); from
    amplitude version 6 (a checkpoint recorded before re-derives as it was)."""

    if plan.amplitude_version < 6:
        return Ties()
    return plan.family.tied_copies(plan.source.config, records)


def _source_metas(family, content_hash: str, records: list, config) -> dict[str, SignalMeta]:
    """The signals ``records`` of the source with ``content_hash`` make up under ``config``
    (all of its layers, or the first ones: the number of records says which)."""

    key = ("metas", family.name, content_hash, len(records))
    metas = _SOURCES.get(key)
    if metas is None:
        signals = family.to_signals(tio.meta_state(records), config)
        metas = {
            k: SignalMeta(s.axes, s.kind, s.fan_in_axis, tuple(s.tensor.shape), s.tensor.dtype)
            for k, s in signals.items()
        }
        _SOURCES.put(key, metas)
    return dict(metas)


def _what_to_read(plan: Plan, records: list):
    """The source's tensor records to read, and the config they make up.

    Weight selection keeps the first layers, so a shallower target reads only those (a
    12 -> 6 layer request reads about half the source); everything else reads it all."""

    recipe, family = plan.recipe, plan.family
    # A method that keeps the first layers reads source statistics only for norm signals,
    # and those span every layer: then the whole source is read. So does a unit order other than
    # stored, which is chosen from every layer.
    norms = SignalSpec(("layers", "hidden"), "norm_weight", None)
    if (
        not get(recipe.method).first_layers
        or recipe.order != "stored"
        or needs_reference(norms, recipe)
        or plan.target_sizes["layers"] >= plan.source_sizes["layers"]
    ):
        return records, plan.source.config
    cut = family.first_layers(
        plan.source.config, [r.name for r in records], plan.target_sizes["layers"]
    )
    if cut is None:
        return records, plan.source.config
    config, names = cut
    return [r for r in records if r.name in names], config


def derive_one(
    plan: Plan,
    key,
    spec,
    shape,
    tshape,
    reference,
    stored_tensor,
    source_signal,
    generator,
    *,
    unit_maps=None,
):
    """One target signal: from the learngene's stored band or block when it holds this
    shape, else computed from the source signal by the recipe; either way through the
    recipe's amplitude rule. ``unit_maps``: net2net's (or HyperCloning's attention
    heads') copies along each axis."""

    recipe, learngene = plan.recipe, plan.learngene
    whole = plan.legacy_whole_moments
    meta = learngene.info["signals"][key] if learngene is not None else {}
    if meta.get("full") and get(recipe.method).learngene:
        return stored_tensor(f"{key}@full")  # nothing in this signal changes size
    if learngene is not None and recipe.method == DCT.name:
        import torch

        if tuple(tshape) == tuple(shape) and not plan.legacy_dct_unchanged:
            # FRONT keeps a low-frequency block: brought back at the source's own size it
            # is a smoothed copy. A signal whose size does not change is the source's, as
            # it is for every other method and for dwt learngenes.
            return source_signal(key).tensor.clone()

        from zoo.transforms import FrontBlock, front_materialize

        block = FrontBlock(
            block=stored_tensor(f"{key}@dct.block"),
            means=stored_tensor(f"{key}@dct.mean"),
            stds=stored_tensor(f"{key}@dct.std"),
            source_shape=shape,
            layer_axis=meta["layer_axis"],
            dtype=compute_dtype(getattr(torch, meta["dtype"]), recipe, plan.dtype_version),
        )
        y = front_materialize(block, tshape)
        if plan.legacy_front_amplitude and spec.kind not in ("norm_weight", "norm_bias"):
            return y  # the old rule (see materialize.rederive) rescaled norm layers only
        return amplitude(spec, recipe).apply(
            y, shape, reference, whole_moments=whole, version=plan.amplitude_version
        )
    if learngene is not None and recipe.method == DWT.name and _same_wavelet(plan):
        # The exact BoT L2S case: the stored cA band at the level that gives this shape.
        stored = {t.name: t for t in learngene.tensors}
        for level in meta.get("levels", []):
            band = stored.get(band_name(key, level))
            if band is not None and tuple(band.shape) == tuple(tshape):
                band = in_compute_dtype(stored_tensor(band.name), recipe, plan.dtype_version)
                return amplitude(spec, recipe).apply(
                    band, shape, reference, whole_moments=whole, version=plan.amplitude_version
                )
    x = source_signal(key).tensor
    return derive_signal(
        x,
        spec,
        tshape,
        recipe,
        reference=reference,
        generator=generator,
        unit_maps=unit_maps,
        whole_moments=whole,
        amplitude_version=plan.amplitude_version,
        dtype_version=plan.dtype_version,
    )


def _derive_by_rows(x, spec, tshape, plan: Plan, reference, rows: int) -> torch.Tensor:
    """:func:`zoo.derive.derive_signal` of ``x`` a block of ``rows`` at a time, into one
    result in the dtype it is derived in (:func:`zoo.derive.compute_dtype`)."""
    import torch

    dtype = compute_dtype(x.dtype, plan.recipe, plan.dtype_version)
    out = torch.empty(tshape, dtype=dtype, device=x.device)
    i = 0
    for block in _row_blocks(x, spec, tshape, plan, reference, rows):
        out[i : i + block.shape[0]] = block
        i += block.shape[0]
    return out


def _row_blocks(x, spec, tshape, plan: Plan, reference, rows: int) -> Iterator[torch.Tensor]:
    """:func:`zoo.derive.derive_signal` of ``x``, a block of ``rows`` at a time, in order;
    a rule that scales by the result's std takes it first, over every block's raw result,
    as over the whole."""

    recipe = plan.recipe
    n = x.shape[0]
    cuts = [(i, min(rows, n - i)) for i in range(0, n, rows)]
    result_std = None
    if amplitude(spec, recipe).scales_by_std:
        result_std = _raw_std(x, spec, tshape, plan, cuts)
    for i, k in cuts:
        yield derive_signal(
            x[i : i + k],
            spec,
            (k, *tshape[1:]),
            recipe,
            reference=reference,
            result_std=result_std,
            amplitude_version=plan.amplitude_version,
            source_count=x.numel(),
            dtype_version=plan.dtype_version,
        )


def _raw_std(x, spec, tshape, plan: Plan, cuts) -> float:
    """The population std of the raw result of resizing ``x`` to ``tshape``, taken over
    the raw results of its blocks of rows ``cuts`` (``(start, length)``, in order) with
    the same float64 blocks, hence the same bits, as over the whole result."""
    from zoo.transforms.moments import Moments

    acc = Moments()
    for i, k in cuts:
        shape = (k, *tshape[1:])
        block = derive_signal(
            x[i : i + k], spec, shape, plan.recipe, raw=True, dtype_version=plan.dtype_version
        )
        acc.add(block)
    return acc.mean_std(correction=0)[1]


def _same_wavelet(plan: Plan) -> bool:
    """A stored band stands for the recipe's wavelet only if it was made with it; with any
    other wavelet the signal is computed from the source."""

    info = plan.learngene.info
    return info.get("method") == DWT.name and info.get("wavelet") == plan.recipe.wavelet


class Sink:
    """Where derived tensors go: hashed always; then written to an output folder, the
    blob store, kept in memory, or checked against recorded digests, as asked.

    Safe to call from several threads. ``records`` lists what was emitted, by name.
    """

    def __init__(
        self,
        *,
        known: KnownDigests | None = None,
        folder=None,
        store=None,
        keep: bool = False,
        expected: dict[str, str] | None = None,
        finite: bool = False,
        source_digests: frozenset[str] = frozenset(),
    ) -> None:
        self.known, self.folder, self.store, self.keep = known, folder, store, keep
        self.expected = expected
        # Refuse a float16 tensor that holds an infinity: values past float16's range
        # (65504) would be written as inf where the source had numbers. A tensor that is
        # one of the source's (``source_digests``) is its own inf, if any, as it was.
        self.finite = finite
        self.source_digests = source_digests
        self.records: dict[str, TensorRecord] = {}
        self.state: dict[str, Any] = {}
        self.differ: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, name: str, t: torch.Tensor) -> None:

        rec, data = tio.record(name, t, self.known)
        if rec.digest not in self.source_digests:
            self.check_finite(name, t)
        if data is not None and self.known is not None:
            self.known.add(t, rec.digest)  # a later view of the same memory is not hashed again
        if self.folder is not None:
            self.folder.put(name, data if data is not None else tio.raw_bytes(t))
        if self.store is not None and not (
            data is None and self.store.keep(rec.digest, rec.nbytes)
        ):
            with tio.writing_to(self.store):  # a full store is named, not a bare errno
                self.store.put(data if data is not None else tio.raw_bytes(t), rec.digest)
        self._done(rec, t if self.keep else None)

    def check_finite(self, name: str, t: torch.Tensor) -> None:
        import torch

        from zoo.errors import InvalidTargetError

        if self.finite and t.dtype == torch.float16 and bool(torch.isinf(t).any()):
            raise InvalidTargetError(
                f"{name} holds values past float16's range (65504), which would be written "
                "as inf: choose dtype=bfloat16 or float32.",
                params=["dtype"],
            )

    def rows(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> RowWriter | None:
        """A writer that takes tensor ``name`` a block of rows at a time, in order, so it
        is never whole in memory (written to the folder if any, hashed always); None when
        this sink needs it whole (to keep it, or to put it in the blob store, which names
        a blob by its digest)."""
        if self.store is not None or self.keep:
            return None
        return RowWriter(self, name, dtype, shape)

    def _done(self, rec: TensorRecord, t: torch.Tensor | None = None) -> None:
        with self._lock:
            if self.expected is not None and self.expected.get(rec.name) != rec.digest:
                self.differ.append(rec.name)
            self.records[rec.name] = rec
            if t is not None:
                self.state[rec.name] = t

    def sorted_records(self) -> list[TensorRecord]:
        return [self.records[n] for n in sorted(self.records)]


class RowWriter:
    """One tensor handed to a :class:`Sink` a block of rows at a time, in order: written
    to its folder if it has one, and hashed as it goes (the digest is that of the whole
    tensor's bytes, as if it had been emitted whole)."""

    def __init__(self, sink: Sink, name: str, dtype: torch.dtype, shape: tuple[int, ...]):
        import hashlib

        self.sink, self.name, self.dtype, self.shape = sink, name, dtype, tuple(shape)
        self._hash = hashlib.sha256()
        self._rows = self._at = 0

    def write(self, block: torch.Tensor) -> None:
        """The next ``block`` of rows (its first axis), in the tensor's dtype."""

        if block.dtype != self.dtype or tuple(block.shape[1:]) != self.shape[1:]:
            raise AssertionError(f"{self.name}: a block {block.dtype} {tuple(block.shape)}")
        self.sink.check_finite(self.name, block)
        data = tio.raw_bytes(block)
        self._hash.update(data)
        if self.sink.folder is not None:
            self.sink.folder.put_part(self.name, self._at, data)
        self._at += data.nbytes
        self._rows += block.shape[0]

    def close(self) -> None:
        """Record the tensor, once every row has come."""
        from zoo.checkpoint import dtype_code

        if self._rows != self.shape[0]:
            raise AssertionError(f"{self.name}: {self._rows} of {self.shape[0]} rows written")
        rec = TensorRecord(
            self.name, dtype_code(self.dtype), self.shape, self._at, self._hash.hexdigest()
        )
        self.sink._done(rec)


def _specs(metas: dict[str, SignalMeta], plan: Plan, names: list[str]) -> dict[str, SignalSpec]:
    """Each signal's spec, its fan-in axis as the plan's amplitude rule reads it: an output
    head has none under amplitude version 1; from version 3 the normalization only a tied
    output head reads has its hidden axis (see :meth:`Family.tied_head_inputs`)."""

    tied = ()
    if plan.amplitude_version >= 3:
        tied = plan.family.tied_head_inputs(
            plan.target_config, {k: m.kind for k, m in metas.items()}, names
        )
    specs = {}
    for k, m in metas.items():
        fan = m.fan_in_axis
        if m.kind == "head" and plan.amplitude_version < 2:
            fan = None
        elif k in tied:
            fan = m.axes.index("hidden")
        specs[k] = SignalSpec(m.axes, m.kind, fan)
    return specs
