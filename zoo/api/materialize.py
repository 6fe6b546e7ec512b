"""Materializing a checkpoint of any size from a learngene or a source, and re-deriving it.

Every materialization is recorded as a derived checkpoint (recipe + manifest hash), kept
virtual (recipe only) unless ``store=True``. Because derivation is deterministic on a
device, a virtual checkpoint can be re-derived and verified bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from zoo import __version__
from zoo.db import queries
from zoo.db.entities import ArtifactInfo
from zoo.derive import Recipe
from zoo.errors import (
    AmbiguousNameError,
    DeviceUnavailableError,
    InvalidInputError,
    InvalidTargetError,
    NotFoundError,
    VerificationError,
)

from .learngenes import DEFAULT_WAVELET, band_name, check_wavelet

if TYPE_CHECKING:
    import torch

    from .tensors import KnownDigests

#: Fallback when the measured defaults (zoo/defaults.py) do not apply to the method asked;
#: the wavelet falls back to extract's (db2, the better wavelet in every measured pair).
DEFAULT_RESCALE = "none"


@dataclass(frozen=True)
class Materialized:
    """What :meth:`zoo.Registry.materialize` returns.

    Attributes:
        state_dict: the target's tensors, on the requested device.
        config: the target's config.json as a dict.
        artifact: the derived checkpoint recorded in the registry.
        out: the HF folder written, if one was asked for.
    """

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    artifact: ArtifactInfo
    out: Path | None = None


@dataclass(frozen=True)
class _Plan:
    parent: ArtifactInfo  # the artifact the derivation edge hangs off
    source: ArtifactInfo  # the checkpoint whose config and signals are resized
    learngene: ArtifactInfo | None
    recipe: Recipe
    target_config: dict[str, Any]
    # Re-derivation only: a FRONT block's amplitude as zoo applied it before rescale
    # reached its matrices (norm layers only), for checkpoints recorded then.
    legacy_front_amplitude: bool = False


def materialize(
    reg,
    query: str,
    *,
    layers: int,
    hidden: int,
    heads: int | None = None,
    intermediate: int | None = None,
    kv_heads: int | None = None,
    method: str | None = None,
    wavelet: str | None = None,
    rescale: str | None = None,
    seed: int = 0,
    norm: str | None = None,
    depth: str | None = None,
    order: str | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    store: bool = False,
) -> Materialized:
    """Build a model of the requested size; see :meth:`zoo.Registry.materialize`."""
    from zoo.families.base import TargetSize

    from . import export
    from . import tensors as tio

    export.check_out(out, force=force)  # refuse before any work
    dev = tio.resolve_device(device, prefer_gpu=True)
    with reg.session() as session:
        parent_row = _resolve_parent(session, query)
        parent = queries.to_info(session, parent_row)
        learngene = parent if parent.kind == "learngene" else None
        source = _source_of(session, parent) if learngene else parent
    target = TargetSize(
        layers=layers, hidden=hidden, heads=heads, intermediate=intermediate, kv_heads=kv_heads
    )
    recipe = _recipe(
        source,
        learngene,
        target,
        method=method,
        wavelet=wavelet,
        rescale=rescale,
        seed=seed,
        norm=norm,
        depth=depth,
        order=order,
    )
    if learngene is not None and recipe.method not in ("dwt", "dct"):
        learngene = None  # baselines read the source itself
        parent = source
    elif learngene is not None and recipe.method != learngene.info["method"]:
        raise InvalidInputError(
            f"{learngene.name} holds {learngene.info['method']} data, not {recipe.method}; "
            f"use --method {learngene.info['method']} or name the source {source.name}."
        )
    plan = _plan(source, parent, learngene, recipe, target)
    _check_fits(reg, plan, dev)
    known = tio.KnownDigests()
    state = derive_state(reg, plan, dev, known)
    info = _record(reg, plan, state, dev, store=store, known=known)
    return _result(plan, info, state, out, force=force)


def _result(plan: _Plan, info: ArtifactInfo, state, out, *, force: bool) -> Materialized:
    """The API's answer, after writing the HF folder when one was asked for."""
    from . import export

    written = None
    if out is not None:
        written = export.write_hf_folder(
            Path(out),
            state,
            plan.target_config,
            force=force,
            metadata=_provenance(plan, info),
            card=export.model_card(plan, info),
        )
    return Materialized(state, plan.target_config, info, written)


def _check_fits(reg, plan: _Plan, dev) -> None:
    """Refuse, before any work, a target whose weights alone exceed the memory ``dev``
    has available: it would only end in an out-of-memory kill. A guard against hopeless
    requests, not a promise: the source (when read) and temporaries come on top."""
    from zoo import _memory
    from zoo.families import get_family

    need = _target_bytes(reg, plan)
    have = _memory.available_bytes(dev)
    if have is not None and need > have:
        sizes = get_family(plan.source.family).axis_sizes(plan.target_config)
        raise InvalidTargetError(
            f"A {sizes['layers']}x{sizes['hidden']} {plan.source.family} holds "
            f"{need / 1e9:.1f} GB of weights, more than the {have / 1e9:.1f} GB of memory "
            f"available on {dev.type}; ask for fewer layers or a smaller hidden size."
        )


def _target_bytes(reg, plan: _Plan) -> int:
    """Bytes of the target's state dict, from shapes alone (no tensor is read)."""
    import torch

    from zoo.derive import target_shape
    from zoo.families import get_family

    from . import tensors as tio

    family = get_family(plan.source.family)
    sizes = family.axis_sizes(plan.target_config)
    if plan.learngene is not None:
        signals = [
            (tuple(m["axes"]), tuple(m["shape"]), getattr(torch, m["dtype"]))
            for m in plan.learngene.info["signals"].values()
        ]
    else:
        records = plan.source.tensors
        if not records:
            with reg.session() as session:
                records = queries.tensor_records(session, plan.source.id)
        signals = [
            (s.axes, tuple(s.tensor.shape), s.tensor.dtype)
            for s in family.to_signals(tio.meta_state(records), plan.source.config).values()
        ]
    return sum(
        math.prod(target_shape(axes, shape, sizes)) * torch.empty(0, dtype=dt).element_size()
        for axes, shape, dt in signals
    )


def _plan(
    source: ArtifactInfo,
    parent: ArtifactInfo,
    learngene: ArtifactInfo | None,
    recipe: Recipe,
    target,
) -> _Plan:
    from zoo.derive import check_method
    from zoo.families import get_family

    family = get_family(source.family)
    target_config = family.target_config(source.config, target)
    source_sizes = family.axis_sizes(source.config)
    method_sizes = family.axis_sizes(target_config)
    if recipe.depth == "identity":  # the method sees the source's depth
        method_sizes["layers"] = source_sizes["layers"]
    check_method(recipe.method, source_sizes, method_sizes)
    return _Plan(parent, source, learngene, recipe, target_config)


def _recipe(
    source: ArtifactInfo,
    learngene: ArtifactInfo | None,
    target,
    *,
    method,
    wavelet,
    rescale,
    seed: int,
    norm: str | None,
    depth: str | None = None,
    order: str | None = None,
) -> Recipe:
    """Fill what the user left out: the learngene's own settings first, then zoo's
    measured defaults for this family and direction (zoo/defaults.py)."""
    from zoo.defaults import default_recipe
    from zoo.families import get_family

    family = get_family(source.family)
    target_config = family.target_config(source.config, target)  # refuses bad sizes early
    source_sizes, target_sizes = family.axis_sizes(source.config), family.axis_sizes(target_config)
    d_method, d_wavelet, d_rescale, d_norm, d_depth = default_recipe(
        source.family, source_sizes, target_sizes
    )
    if method is None:
        method = learngene.info["method"] if learngene else d_method
    if method == "dwt" and wavelet is None:
        if learngene is not None and learngene.info["method"] == "dwt":
            wavelet = learngene.info["wavelet"]
        else:
            wavelet = d_wavelet if d_method == "dwt" else DEFAULT_WAVELET
    if method != "dwt" and wavelet is not None:
        raise InvalidInputError("--wavelet applies to --method dwt only.")
    if method == "dwt":
        check_wavelet(wavelet)
    if rescale is not None and rescale != "none" and method not in ("dwt", "dct"):
        raise InvalidInputError(
            f"--rescale applies to --method dwt or dct, not {method}; "
            "use --norm match to match normalization layers to the source."
        )
    if rescale is None:
        rescale = d_rescale if method == d_method else DEFAULT_RESCALE
    # The measured norm and depth rules go with the measured recipe, not with any other.
    measured = (d_method, d_wavelet, d_rescale)
    same = (method, wavelet if method == "dwt" else None, rescale) == measured
    if norm is None:
        norm = d_norm if same else "method"
    deeper = target_sizes["layers"] > source_sizes["layers"]
    if depth == "identity" and not deeper:
        raise InvalidInputError(
            f"--depth identity adds layers, but the target has {target_sizes['layers']} "
            f"and the source {source_sizes['layers']}."
        )
    if depth is None:
        # Without added layers the rule changes nothing: one recipe, one artifact.
        depth = d_depth if same and deeper and method != "scratch" else "method"
    order = _order(learngene, method, order)
    return Recipe(
        method=method,
        wavelet=wavelet if method == "dwt" else None,
        rescale=rescale,
        seed=seed,
        norm=norm,
        depth=depth,
        order=order,
    )


def _order(learngene: ArtifactInfo | None, method: str, order: str | None) -> str:
    """The unit order: a learngene's bands were taken in the order it was extracted in,
    so its dwt/dct recipes have that order; everything else reads the source in the
    order asked (default as stored)."""
    from zoo.unit_order import check_order

    if order is not None:
        check_order(order)
    if learngene is None or method not in ("dwt", "dct"):
        return order or "stored"
    extracted = learngene.info.get("order", "stored")
    if order is not None and order != extracted:
        raise InvalidInputError(
            f"{learngene.name} was extracted in unit order {extracted!r}, not {order!r}; "
            f"extract one with --order {order}, or leave --order out."
        )
    return extracted


def _resolve_parent(session: Session, query: str):
    """A family name with a default set (`zoo default`) means that default, whatever else
    has that name; otherwise a name, alias or hash; or a family name, meaning its only
    learngene."""
    from zoo.families import FAMILY_NAMES

    if query in FAMILY_NAMES:
        row = queries.family_default(session, query)
        if row is not None and row.deleted_at is None:
            return row
    try:
        return queries.resolve(session, query)
    except NotFoundError:
        if query not in FAMILY_NAMES:
            raise
    candidates = queries.list_artifacts(session, kind="learngene", family=query)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        sources = [r.name for r in queries.list_artifacts(session, kind="source", family=query)]
        hint = (
            f" Extract one with `zoo extract {sources[0]}`, or name a source: {', '.join(sources)}."
            if sources
            else f" Import a {query} checkpoint first."
        )
        raise NotFoundError(
            f"No {query} learngene is registered.{hint}", query=query, suggestions=sources
        )
    names = [r.name for r in candidates]
    raise AmbiguousNameError(
        f"Several {query} learngenes qualify ({', '.join(names)}); name one, or set the "
        f"default with `zoo default {query} NAME`.",
        candidates=names,
    )


def _source_of(session: Session, learngene: ArtifactInfo) -> ArtifactInfo:
    from zoo.db.models import Artifact

    for edge in queries.edges(session, child_id=learngene.id):
        if edge.relation == "extract":
            # Without its tensor records: a learngene's bands usually suffice, and
            # derive_state reads the records only when it has to read the source.
            row = session.get(Artifact, edge.parent_id)
            return queries.to_info(session, row, tensors=False)
    raise NotFoundError(f"Learngene {learngene.name} has no recorded source.")


def _what_to_read(plan: _Plan, family, records):
    """The source's tensor records to read, and the config they make up.

    Weight selection keeps the first layers, so a shallower target reads only those (a
    12 -> 6 layer request reads about half the source); everything else reads it all."""
    from zoo.derive import needs_reference
    from zoo.families.base import SignalSpec

    recipe = plan.recipe
    layers = family.axis_sizes(plan.target_config)["layers"]
    # Weight selection reads source statistics only for norm signals, and those span
    # every layer: then the whole source is read. So does a unit order other than
    # stored, which is chosen from every layer.
    norms = SignalSpec(("layers", "hidden"), "norm_weight", None)
    if (
        recipe.method != "weight-selection"
        or recipe.order != "stored"
        or needs_reference(norms, recipe)
        or layers >= family.axis_sizes(plan.source.config)["layers"]
    ):
        return records, plan.source.config
    cut = family.first_layers(plan.source.config, [r.name for r in records], layers)
    if cut is None:
        return records, plan.source.config
    config, names = cut
    return [r for r in records if r.name in names], config


def derive_state(
    reg,
    plan: _Plan,
    dev,
    known: KnownDigests | None = None,
    *,
    recorded_layer_digests: bool = True,
) -> dict[str, torch.Tensor]:
    """The target state dict: bands and blocks from the learngene when they suffice,
    the source's signals otherwise. ``known`` learns the digests of what was read and,
    with ``recorded_layer_digests``, the per-layer digests the learngene recorded for its
    bands (a band passed through unchanged is then not hashed again; verification turns
    this off and hashes every output itself)."""
    import torch

    from zoo.derive import deepen_by_identity, needs_reference, signal_stats, target_shape
    from zoo.families import get_family
    from zoo.families.base import SignalSpec
    from zoo.unit_order import ordered

    from . import tensors as tio

    family = get_family(plan.source.family)
    target_sizes = family.axis_sizes(plan.target_config)
    target_layers = target_sizes["layers"]
    source_layers = family.axis_sizes(plan.source.config)["layers"]
    deepen = plan.recipe.depth == "identity" and target_layers > source_layers
    if deepen:  # the method resizes everything but depth; deepen_by_identity adds layers
        target_sizes = {**target_sizes, "layers": source_layers}
    generator = torch.Generator().manual_seed(plan.recipe.seed)
    stored = {t.name: t for t in plan.learngene.tensors} if plan.learngene else {}
    lg_signals = plan.learngene.info["signals"] if plan.learngene else {}

    source_signals = None

    def all_source_signals():
        # Read lazily: a learngene's bands often suffice and the source is never read.
        nonlocal source_signals
        if source_signals is None:
            records = plan.source.tensors
            if not records:  # loaded without them (see _source_of)
                with reg.session() as session:
                    records = queries.tensor_records(session, plan.source.id)
            records, config = _what_to_read(plan, family, records)
            if plan.source.virtual:
                state = virtual_weights(reg, plan.source, records, dev, known)
            else:
                state = tio.load_tensors(reg.store, records, device=dev, known=known)
            # In the learngene's order when bands are taken from the source.
            source_signals = ordered(family.to_signals(state, config), plan.recipe.order)
        return source_signals

    def source_signal(key: str):
        return all_source_signals()[key]

    layer_digests = {}
    if recorded_layer_digests and known is not None:
        layer_digests = {
            band_name(key, int(level)): digests
            for key, meta in lg_signals.items()
            for level, digests in meta.get("layer_digests", {}).items()
        }

    def stored_tensor(name: str):
        t = tio.load_tensors(reg.store, [stored[name]], device=dev, known=known)[name]
        digests = layer_digests.get(name)
        if digests is not None and len(digests) == t.shape[0]:
            # The band's bytes were just verified; its layers' digests were taken from
            # those same bytes at extraction. Keyed by region and version, they count
            # only for the band's own layers while it is unchanged.
            for part, digest in zip(t.unbind(0), digests, strict=True):
                known.add(part, digest)
        return t

    keys = sorted(lg_signals) if plan.learngene else sorted(all_source_signals())

    def one(key: str) -> torch.Tensor:
        if plan.learngene:
            meta = lg_signals[key]
            spec = SignalSpec(tuple(meta["axes"]), meta["kind"], meta["fan_in_axis"])
            shape = tuple(meta["shape"])
            reference = (meta["mean"], meta["std"])
        else:
            sig = source_signal(key)
            spec = SignalSpec(sig.axes, sig.kind, sig.fan_in_axis)
            shape = tuple(sig.tensor.shape)
            # The statistics cost a float64 pass over the signal; most recipes never read them.
            needed = needs_reference(spec, plan.recipe)
            reference = signal_stats(sig.tensor) if needed else None
        tshape = target_shape(spec.axes, shape, target_sizes)
        return _derive_one(
            plan,
            key,
            spec,
            shape,
            tshape,
            reference,
            stored,
            stored_tensor,
            source_signal,
            generator,
            dev,
        )

    def work(key: str) -> int:
        # Elements written and hashed, plus those read when the source is transformed:
        # the largest signals start first so none runs alone at the end.
        if plan.learngene:
            meta = lg_signals[key]
            axes, shape, read = tuple(meta["axes"]), tuple(meta["shape"]), 0
        else:
            sig = source_signal(key)
            axes, shape, read = sig.axes, tuple(sig.tensor.shape), sig.tensor.numel()
        return math.prod(target_shape(axes, shape, target_sizes)) + read

    def axes_of(key: str) -> tuple[str, ...]:
        if plan.learngene:
            return tuple(lg_signals[key]["axes"])
        return source_signal(key).axes

    def one_hashed(key: str) -> torch.Tensor:
        y = one(key)
        if deepen and "layers" in axes_of(key):
            y = deepen_by_identity(y, key, axes_of(key), target_layers)
        layout = family.unchanged_outputs(key)
        if known is not None and layout is not None:
            known.hash_ahead(y, layout)
        return y

    if plan.recipe.method in ("scratch", "net2net"):
        # These draw from one generator: the order of the signals fixes the numbers.
        values = [one_hashed(k) for k in keys]
    else:
        if plan.learngene is None:
            all_source_signals()  # load once, before the threads need it
        values = tio.parallel_map(one_hashed, keys, cost=[work(k) for k in keys])
    return family.from_signals(dict(zip(keys, values, strict=True)), plan.target_config)


def _derive_one(
    plan, key, spec, shape, tshape, reference, stored, stored_tensor, source_signal, generator, dev
):
    from zoo.derive import derive_signal

    recipe = plan.recipe
    meta = plan.learngene.info["signals"][key] if plan.learngene is not None else {}
    if meta.get("full") and recipe.method in ("dwt", "dct"):
        return stored_tensor(f"{key}@full")  # nothing in this signal changes size
    if recipe.method == "dct" and plan.learngene is not None:
        import torch

        from zoo.transforms import FrontBlock, front_materialize

        block = FrontBlock(
            block=stored_tensor(f"{key}@dct.block"),
            means=stored_tensor(f"{key}@dct.mean"),
            stds=stored_tensor(f"{key}@dct.std"),
            source_shape=shape,
            layer_axis=meta["layer_axis"],
            dtype=getattr(torch, meta["dtype"]),
        )
        y = front_materialize(block, tshape)
        if plan.legacy_front_amplitude and spec.kind not in ("norm_weight", "norm_bias"):
            return y  # the old rule (see _verified_rederivation) rescaled norm layers only
        return _amplitude(y, spec, shape, recipe, reference)
    if recipe.method == "dwt" and plan.learngene is not None and _same_wavelet(plan):
        # The exact BoT L2S case: the stored cA band at the level that gives this shape,
        # with the same amplitude rules derive_signal applies to a computed one.
        for level in meta.get("levels", []):
            band = stored.get(band_name(key, level))
            if band is not None and tuple(band.shape) == tuple(tshape):
                return _amplitude(stored_tensor(band.name), spec, shape, recipe, reference)
    x = source_signal(key).tensor
    return derive_signal(x, spec, tshape, recipe, reference=reference, generator=generator)


def _same_wavelet(plan) -> bool:
    """A stored band stands for the recipe's wavelet only if it was made with it; with any
    other wavelet the signal is computed from the source."""
    info = plan.learngene.info
    return info.get("method") == "dwt" and info.get("wavelet") == plan.recipe.wavelet


def _amplitude(y, spec, shape, recipe: Recipe, reference):
    """The amplitude rules derive_signal applies to a computed signal, applied to one read
    from a learngene (a stored band, or a FRONT block brought back to the target size):
    the source's statistics come from the learngene, so the source is not read."""
    from zoo.derive import _match_moments
    from zoo.transforms import rescale_like

    if spec.kind in ("norm_weight", "norm_bias"):
        if recipe.rescale != "none" or recipe.norm == "match":
            return _match_moments(y, *reference)
        return y
    if recipe.rescale == "none":
        return y
    fan = (spec.fan_in_axis,) if spec.kind == "linear" and spec.fan_in_axis is not None else ()
    return rescale_like(
        y, shape, rescale=recipe.rescale, reference_std=reference[1], fan_in_axes=fan
    )


def _record(reg, plan: _Plan, state, dev, *, store: bool, known=None) -> ArtifactInfo:
    from zoo.checkpoint import manifest_hash

    from . import tensors as tio

    # Outputs that are stored tensors unchanged (a raw band, a fixed signal) keep their
    # verified digests; the rest are hashed here.
    recs = tio.store_tensors(reg.store, state, known) if store else tio.records(state, known)
    content_hash = manifest_hash(plan.target_config, recs)
    recipe = edge_recipe(plan, dev)
    family = plan.source.family
    cfg = plan.target_config
    from zoo.families import get_family

    sizes = get_family(family).axis_sizes(cfg)
    label = plan.recipe.method + (f"-{plan.recipe.wavelet}" if plan.recipe.wavelet else "")
    base = f"{family}-l{sizes['layers']}-h{sizes['hidden']}-{label}"
    info = {"recipe": recipe, "target": sizes}

    def link(session: Session, row) -> ArtifactInfo:
        from zoo.db.graph import is_ancestor

        parent = session.get(type(row), plan.parent.id)
        # An identity recipe can give back the parent itself, or one of its ancestors (an
        # imported copy of a derived folder): the result is that artifact, with no edge
        # that would close a cycle.
        if row.id != parent.id and not is_ancestor(session, row.id, parent.id):
            queries.add_edge(
                session,
                parent=parent,
                child=row,
                relation="materialize",
                recipe=recipe,
                zoo_version=__version__,
                by=reg.user,
            )
        # Same content hash, same tensor records: no need to read them back.
        return dataclasses.replace(
            queries.to_info(session, row, tensors=False), tensors=tuple(recs)
        )

    def find(session: Session):
        row = queries.find_by_content(session, "derived", content_hash)
        if row is None:
            return None
        if row.deleted_at is not None:
            row.deleted_at = None
        if store and row.virtual:
            row.virtual = False
        return link(session, row)

    def insert(session: Session) -> ArtifactInfo:
        found = find(session)
        if found is not None:
            return found
        row = queries.insert_artifact(
            session,
            kind="derived",
            name=f"{base}-{content_hash[:8]}",
            family=family,
            content_hash=content_hash,
            config=cfg,
            info=info,
            tensors=recs,
            created_by=reg.user,
            virtual=not store,
            layers=sizes.get("layers"),
            hidden=sizes.get("hidden"),
        )
        return link(session, row)

    return reg.transaction(insert, on_conflict=find)


def edge_recipe(plan: _Plan, dev) -> dict[str, Any]:
    from zoo.transforms import TRANSFORM_VERSION

    return {
        **plan.recipe.to_json(),
        "device": dev.type,
        "transform_version": TRANSFORM_VERSION,
        "source": plan.source.content_hash,
        "learngene": plan.learngene.content_hash if plan.learngene else None,
        "target_config": plan.target_config,
    }


def _provenance(plan: _Plan, info: ArtifactInfo) -> dict[str, str]:
    """safetensors metadata (string -> string): lineage as JSON strings."""
    import json

    return {
        "format": "pt",
        "zoo.derived": json.dumps({"name": info.name, "content_hash": info.content_hash}),
        "zoo.source": json.dumps(
            {"name": plan.source.name, "content_hash": plan.source.content_hash}
        ),
        "zoo.learngene": json.dumps(
            {"name": plan.learngene.name, "content_hash": plan.learngene.content_hash}
            if plan.learngene
            else None
        ),
        "zoo.recipe": json.dumps(plan.recipe.to_json(), sort_keys=True),
    }


def rederive(
    reg,
    query: str,
    *,
    out: str | Path | None = None,
    force: bool = False,
    device: str | None = None,
) -> Materialized:
    """Re-derive a derived checkpoint from its recorded recipe and verify it bit for bit.

    Raises:
        VerificationError: the re-derived tensors do not hash to the recorded manifest.
    """
    from . import export

    export.check_out(out, force=force)
    with reg.session() as session:
        row = queries.resolve(session, query, kinds=("derived",))
        info = queries.to_info(session, row)
    plan, state = _verified_rederivation(reg, info, device)
    return _result(plan, info, state, out, force=force)


def _verified_rederivation(reg, info: ArtifactInfo, device: str | None, *, as_parent=False):
    """``info``'s recorded recipe run again (on the recorded device unless ``device``
    names another), checked against its manifest; returns the plan and the state.
    ``as_parent``: it is read as the source of another derivation (the error says so)."""
    from zoo.checkpoint import manifest_hash
    from zoo.db.models import Artifact

    from . import tensors as tio

    with reg.session() as session:
        edge = next(
            (e for e in queries.edges(session, child_id=info.id) if e.relation == "materialize"),
            None,
        )
        if edge is None:
            raise NotFoundError(f"{info.name} has no materialize recipe to re-derive from.")
        parent = queries.to_info(session, session.get(Artifact, edge.parent_id))
        learngene = parent if parent.kind == "learngene" else None
        source = _source_of(session, parent) if learngene else parent
    r = edge.recipe
    recipe = Recipe(
        method=r["method"],
        wavelet=r.get("wavelet"),
        rescale=r["rescale"],
        seed=r["seed"],
        norm=r.get("norm", "method"),
        depth=r.get("depth", "method"),
        order=r.get("order", "stored"),
    )
    try:
        dev = tio.resolve_device(device or r["device"])
    except DeviceUnavailableError as exc:
        if device:
            raise
        # Its bits are reproduced on the recorded device; another may round differently.
        missing = f"{info.name} was derived on {r['device']}, which is not available here"
        raise DeviceUnavailableError(
            f"{missing}; it is virtual: keep its weights on such a machine with the `zoo "
            "materialize` that made it plus --store, then use it anywhere."
            if as_parent
            else f"{missing}; re-derive it on a machine with one, or pass --device cpu "
            "(its bits may then differ and fail verification)."
        ) from exc
    plan = _Plan(parent, source, learngene, recipe, r["target_config"])

    def attempt(plan: _Plan):
        known = tio.KnownDigests()
        state = derive_state(reg, plan, dev, known, recorded_layer_digests=False)
        recs = tio.records(state, known)
        return state, recs, manifest_hash(plan.target_config, recs)

    state, recs, actual = attempt(plan)
    if actual != info.content_hash and _maybe_legacy_front(plan, r):
        # Recorded before FRONT's --rescale reached matrices, under the same transform
        # version: the old rule is tried, and kept only if it gives the recorded bytes.
        legacy = dataclasses.replace(plan, legacy_front_amplitude=True)
        old_state, old_recs, old_actual = attempt(legacy)
        if old_actual == info.content_hash:
            plan, state, recs, actual = legacy, old_state, old_recs, old_actual
    if actual != info.content_hash:
        recorded = {t.name: t.digest for t in info.tensors}
        differ = sorted(t.name for t in recs if recorded.get(t.name) != t.digest)
        raise VerificationError(
            f"Re-deriving {info.name} on {dev.type} gave different tensors "
            f"({len(differ)} differ, e.g. {', '.join(differ[:3])}); recorded on "
            f"{r['device']} with transforms {r['transform_version']}."
        )
    return plan, state


def _maybe_legacy_front(plan: _Plan, recorded: dict[str, Any]) -> bool:
    """Could this checkpoint have been derived under the old FRONT amplitude rule?"""
    return (
        plan.learngene is not None
        and plan.recipe.method == "dct"
        and plan.recipe.rescale in ("std", "fan")
        and recorded.get("transform_version") == "3"
    )


def virtual_weights(reg, info: ArtifactInfo, records, dev, known) -> dict[str, torch.Tensor]:
    """A virtual checkpoint's weights, re-derived on the device it was recorded on (the
    only one that gives its bytes) and verified, then moved to ``dev``."""
    from zoo.db.models import Artifact

    if not info.tensors:  # loaded without them (see _source_of)
        with reg.session() as session:
            info = queries.to_info(session, session.get(Artifact, info.id))
    _, state = _verified_rederivation(reg, info, None, as_parent=True)
    digests = {t.name: t.digest for t in info.tensors}
    out = {}
    for r in records:
        t = state[r.name]
        if known is not None:
            known.add(t, digests[r.name])
        out[r.name] = t.to(dev)
    return out


def set_default(reg, family: str, query: str) -> ArtifactInfo:
    """Make ``query`` (a learngene) what a bare family name materializes from."""
    from zoo.families import get_family

    get_family(family)

    def work(session: Session) -> ArtifactInfo:
        row = queries.resolve(session, query, kinds=("learngene",))
        if row.family != family:
            raise InvalidInputError(
                f"{row.name} is a {row.family} learngene, not {family}; pick a {family} one."
            )
        queries.set_family_default(session, family, row)
        return queries.to_info(session, row)

    return reg.transaction(work)
