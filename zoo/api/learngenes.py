"""Extracting learngenes: a source's wavelet approximation bands or DCT low-frequency blocks.

A learngene is stored once, content-addressed, as tensors named ``SIGNAL@dwtK`` (the cA
band after K levels over every changeable axis) or ``SIGNAL@dct.block`` /
``@dct.mean`` / ``@dct.std`` (the FRONT block and the per-layer statistics that undo its
normalization). Its ``info`` records the source, method, settings, zoo's transform
version, and each signal's axes, kind, shape and statistics. A band whose layers become
the target's per-layer tensors unchanged (a raw L2S band) also records the sha256 of each
layer's bytes, so materializing from it hashes nothing it read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from zoo import __version__
from zoo.db import queries
from zoo.db.entities import ArtifactInfo, TensorRecord
from zoo.errors import ConflictError, InvalidInputError, VerificationError

from .learngene_format import (
    band_name,
    changeable_axes,
    dwt_levels,
    extract_recipe,
    full_name,
)


def _check_levels(signals, sizes: dict[str, int], wanted: int, source_name: str) -> None:
    """Refuse levels no signal can reach: such a learngene would hold the same bands as a
    lower-level one under a name that promises more."""
    reachable = max(
        (
            len(dwt_levels(tuple(sig.tensor.shape), axes, wanted))
            for sig in signals.values()
            if (axes := changeable_axes(sig.axes, sizes))
        ),
        default=0,
    )
    if wanted > reachable:
        if reachable == 0:
            raise InvalidInputError(
                f"No resizable axis of {source_name} halves exactly, so a dwt learngene would "
                "hold no band; use method='dct'.",
                params=["method"],
            )
        raise InvalidInputError(
            f"levels={wanted}: the axes of {source_name} halve exactly at most {reachable} "
            f"times; ask for {reachable} or fewer.",
            params=["levels"],
        )


def extract(
    reg,
    source: str,
    *,
    method: str = "dwt",
    wavelet: str | None = None,
    levels: int | None = None,
    keep: float | None = None,
    name: str | None = None,
    device: str | None = None,
    order: str = "stored",
) -> ArtifactInfo:
    """Extract (once) a learngene from a registered checkpoint.

    Asked again, it returns the learngene already registered, after checking its blobs:
    missing or damaged ones are recomputed from the source and rewritten."""
    from zoo.checkpoint import manifest_hash, validate_name

    from . import tensors as tio
    from .catalog import resizable

    if name is not None:
        validate_name(name)
    # The settings are checked there (zoo.api.arguments.check_extract, as a client checks
    # them), the device by resolve_device.
    recipe = extract_recipe(method, wavelet=wavelet, levels=levels, keep=keep, order=order)
    tio.resolve_device(device)  # refused alike whether or not the learngene exists
    with reg.session() as session:
        src = queries.resolve(session, source, kinds=("source", "derived"))
        existing = _existing_extraction(session, src.id, recipe)
        src_info = queries.to_info(session, src)
        if existing is not None:
            existing = queries.to_info(session, existing)
        elif name is not None:
            _check_name_free(session, name, {**recipe, "source": src_info.content_hash})
    resizable(src_info)  # one line naming the families zoo resizes, before any work

    def recompute(emit) -> None:
        compute(reg, src_info, recipe, device, emit=emit)

    if existing is not None:
        restore_blobs(reg, existing, recompute)
        if name is not None and name != existing.name and name not in existing.aliases:
            return reg.transaction(lambda s: _also_named(s, existing.id, name, reg.user))
        return existing
    reg.check_writable()  # before any blob is written
    stored: dict[str, TensorRecord] = {}

    def keep(name: str, t) -> None:  # blobs before rows, each as soon as it is computed
        stored[name] = tio.store_tensors(reg.store, {name: t})[0]

    signal_info = compute(reg, src_info, recipe, device, emit=keep)
    recs = tuple(stored[n] for n in sorted(stored))
    identity = {**recipe, "source": src_info.content_hash, "signals": signal_info}
    # The source's registry name is shown, not hashed: the same bytes extracted in any
    # registry, from a source under any name, are one learngene.
    info = {**identity, "source_name": src_info.name}
    content_hash = manifest_hash({"learngene": identity}, recs)
    default_name = _default_name(src_info.name, recipe, content_hash)

    def link(session: Session, row) -> ArtifactInfo:
        queries.add_edge(
            session,
            parent_id=src_info.id,
            child_id=row.id,
            relation="extract",
            recipe=recipe,
            zoo_version=__version__,
            by=reg.user,
        )
        # Same content hash, same tensor records: no need to read them back.
        return dataclasses.replace(queries.to_info(session, row, tensors=False), tensors=recs)

    def find(session: Session):
        row = queries.find_by_content(session, "learngene", content_hash, for_write=True)
        if row is None:
            row = _recorded_before(session, src_info.family, identity, recs)
        if row is None:
            return None
        if row.deleted_at is not None:  # extracting again brings it back
            row.deleted_at = None
        if name:  # asked for under another name: it answers to it, as an import does
            queries.also_named(session, row, name, what="learngene", by=reg.user)
        return link(session, row)

    created: list[int] = []

    def create(session: Session) -> ArtifactInfo:
        clash = f"The name {name!r} is already taken; choose another name=."
        row = queries.insert_artifact(
            session,
            kind="learngene",
            name=queries.free_name(session, name, default_name, content_hash, clash=clash),
            family=src_info.family,
            content_hash=content_hash,
            config=src_info.config,
            info=info,
            tensors=recs,
            created_by=reg.user,
            layers=src_info.layers,
            hidden=src_info.hidden,
        )
        created[:] = [row.id]
        return link(session, row)

    result = reg.get_or_create(find, create)
    if created != [result.id]:
        # Registered before (storing a blob that is there keeps it): restore damaged ones.
        restore_blobs(reg, result, recompute)
    return result


def compute(
    reg,
    src_info: ArtifactInfo,
    recipe: dict[str, Any],
    device: str | None = None,
    *,
    emit: Callable[[str, Any], None],
) -> dict[str, Any]:
    """A learngene's tensors, computed from its source's weights group by group (a
    group's source tensors, its bands, then the next group) and handed to ``emit(name,
    tensor)`` one by one, so no more than a group is in memory; returns the per-signal
    info. A unit order other than stored is chosen from every layer, and a virtual source
    is re-derived whole: those read the source once, whole."""
    from . import tensors as tio
    from .catalog import resizable

    family = resizable(src_info)
    dev = tio.resolve_device(device)
    config = src_info.config
    sizes = family.axis_sizes(config)
    records = list(src_info.tensors)
    shapes = family.to_signals(tio.meta_state(records), config)  # checks every tensor first
    if recipe["method"] == "dwt":
        _check_levels(shapes, sizes, recipe["levels"], src_info.name)
    order = recipe.get("order", "stored")
    _check_memory(family, src_info, recipe, dev)
    signal_info: dict[str, Any] = {}
    if src_info.virtual or order != "stored":
        from zoo.unit_order import ordered

        if src_info.virtual:
            # Recipe only: its weights are re-derived on their recorded device and verified.
            from .materialize import virtual_weights

            state = virtual_weights(reg, src_info, records, dev, None)
        else:
            state = tio.load_tensors(reg.store, records, device=dev)
        parts = [ordered(family.to_signals(state, config), order)]
    else:
        groups: dict[tuple[str, ...], list] = {}
        for r in records:
            groups.setdefault(family.group_of(r.name), []).append(r)

        def read(group: list):
            state = tio.load_tensors(reg.store, group, device=dev, layer_of=family.layer_index)
            return family.to_signals(state, config, partial=True)

        parts = (read(groups[g]) for g in sorted(groups))
    for signals in parts:
        for key in sorted(signals):
            # Popped: a signal is freed once banded, before the next group is read.
            signal_info[key] = _bands(family, key, signals.pop(key), sizes, recipe, emit)
    return signal_info


# Bytes per source element a group's bands take while they are computed, besides the
# group itself (an estimate that errs high; measured on a 0.84B bf16 Llama's 0.37 GB FFN
# role: about 2 for dwt, whose slabs are widened one at a time, and 7 for dct, which
# widens the role to float32 and low-passes it axis by axis).
_WORK_BYTES = {"dwt": 4, "dct": 8}


def _check_memory(family, src_info: ArtifactInfo, recipe: dict[str, Any], dev) -> None:
    """Refuse, before any tensor is read, a source whose largest group (or whole weights,
    where a unit order or a re-derivation reads them at once) cannot be banded in the
    memory ``dev`` has: past it the kernel kills the process, with nothing said."""
    from zoo import _memory

    from .export import decimal_bytes
    from .materialize import MEMORY_MARGIN

    have = _memory.available_bytes(dev)
    if have is None:
        return
    groups: dict[tuple[str, ...], list] = {}
    for r in src_info.tensors:
        groups.setdefault(family.group_of(r.name), []).append(r)
    work = _WORK_BYTES[recipe["method"]]
    largest = max(
        (sum(r.nbytes + work * math.prod(r.shape) for r in g) for g in groups.values()),
        default=0,
    )
    if src_info.virtual or recipe.get("order", "stored") != "stored":
        largest += sum(r.nbytes for r in src_info.tensors)
    usable = int(have * MEMORY_MARGIN)
    if largest > usable:
        raise InvalidInputError(
            f"A {recipe['method']} learngene of {src_info.name} needs "
            f"{decimal_bytes(largest)} for its largest part while it is extracted, more "
            f"than the {decimal_bytes(usable)} zoo plans to use of the "
            f"{decimal_bytes(have)} available on {dev.type}; extract it on a machine with "
            "more memory."
        )


def _bands(family, key: str, sig, sizes: dict[str, int], recipe: dict[str, Any], emit) -> dict:
    """One signal's learngene tensors, handed to ``emit``; returns its info."""
    from zoo.derive import signal_stats
    from zoo.transforms import dwt_approx, front_extract

    from . import tensors as tio

    mean, std = signal_stats(sig.tensor)
    axes = changeable_axes(sig.axes, sizes)
    entry: dict[str, Any] = {
        "axes": list(sig.axes),
        "kind": sig.kind,
        "fan_in_axis": sig.fan_in_axis,
        "shape": list(sig.tensor.shape),
        "dtype": str(sig.tensor.dtype).replace("torch.", ""),
        "mean": mean,
        "std": std,
    }
    if not axes:
        # Nothing in it can change size (vocab-only biases, fixed buffers): kept whole.
        # Its bytes usually equal a source tensor's, so the store holds them once.
        emit(full_name(key), sig.tensor)
        entry["full"] = True
    elif recipe["method"] == "dwt":
        bands = dwt_levels(tuple(sig.tensor.shape), axes, recipe["levels"])
        per_layer = family.unchanged_outputs(key) == "layers"
        for k in bands:
            band = dwt_approx(sig.tensor, axes=axes, level=k, wavelet=recipe["wavelet"])
            _check_range(key, f"level-{k} band", band, sig.tensor)
            if per_layer:
                entry.setdefault("layer_digests", {})[str(k)] = tio.layer_digests(band)
            emit(band_name(key, k), band)
        entry["levels"] = bands
    else:
        layer_axis = sig.axes.index("layers") if "layers" in sig.axes else None
        # Only axes that can change are low-passed; vocab, positions... stay whole.
        keep = [recipe["keep"] if i in axes else 1.0 for i in range(sig.tensor.dim())]
        block = front_extract(sig.tensor, keep=keep, layer_axis=layer_axis)
        _check_range(key, "DCT block", block.block, sig.tensor)
        emit(f"{key}@dct.block", block.block)
        emit(f"{key}@dct.mean", block.means)
        emit(f"{key}@dct.std", block.stds)
        entry["layer_axis"] = layer_axis
    return entry


def _check_range(key: str, what: str, band, source) -> None:
    """A float16 band is refused where its values pass float16's range (an orthonormal
    low-pass grows a smooth signal's values by sqrt(2) per halved axis): stored, they
    would be inf where the source holds numbers."""
    import torch

    overflows = band.dtype == torch.float16 and bool(torch.isinf(band).any())
    if overflows and not bool(torch.isinf(source).any()):
        raise InvalidInputError(
            f"The {what} of {key} passes float16's range (65504), so it would be stored "
            "as inf: extract from a bfloat16 or float32 copy of the checkpoint."
        )


def restore_blobs(reg, info: ArtifactInfo, produce: Callable[[Callable], Any]) -> list[str]:
    """Rewrite the blobs of ``info`` that are missing or damaged, from what
    ``produce(emit)`` hands ``emit(name, tensor)`` (called only when a blob is damaged);
    returns the digests rewritten.

    Raises:
        VerificationError: a recomputed tensor does not give the recorded bytes.
    """
    from . import tensors as tio

    def intact(digest: str) -> bool:
        return reg.store.verify(digest)

    records = list(info.tensors)
    ok = tio.parallel_map(
        intact,
        [r.digest for r in records],
        cost=[r.nbytes for r in records],
        min_cost=tio.store_min_cost(reg.store),
    )
    damaged = [r for r, good in zip(records, ok, strict=True) if not good]
    if not damaged:
        return []
    reg.check_writable()
    wanted = {r.name: r.digest for r in damaged}
    rewritten: list[str] = []

    def restore(name: str, t) -> None:
        digest = wanted.pop(name, None)
        if digest is None:
            return
        data = tio.raw_bytes(t)
        if hashlib.sha256(data).hexdigest() != digest:
            wanted[name] = digest
            return
        if digest not in rewritten:
            reg.store.rewrite(digest, data)
            rewritten.append(digest)

    produce(restore)
    if wanted:
        raise VerificationError(
            f"{info.name}'s tensor {sorted(wanted)[0]} is missing or damaged in the store, "
            "and recomputing it did not give the recorded bytes (extracted on another "
            "device?); extract it again on that device, or remove it with `zoo rm`."
        )
    return rewritten


def _recorded_before(session: Session, family: str, identity: dict[str, Any], recs):
    """A learngene with exactly this content registered under the earlier identity rule,
    whose hash also covered its source's registry name. It keeps that hash (derived
    checkpoints' recipes and written folders cite it); nothing is registered twice."""
    from sqlalchemy import select

    from zoo.db.entities import loads
    from zoo.db.models import Artifact

    wanted = sorted((r.name, r.digest) for r in recs)
    rows = session.scalars(
        select(Artifact)
        .where(
            Artifact.kind == "learngene",
            Artifact.family == family,
            # Stored as canonical JSON (sorted keys, no spaces): a cheap first filter.
            Artifact.info_json.contains(f'"source":"{identity["source"]}"'),
        )
        .order_by(Artifact.id)
    )
    for row in rows:
        info = loads(row.info_json) or {}
        info.pop("source_name", None)
        if info != identity:
            continue
        have = sorted((t.name, t.digest) for t in queries.tensor_records(session, row.id))
        if have == wanted:
            return row
    return None


def _check_name_free(session: Session, name: str, identity: dict[str, Any]) -> None:
    """Refuse, before any band is computed or stored, a --name held by anything but a
    learngene of this source and recipe (``identity``): only that one can turn out to be
    the learngene extracted (its content found again), so any other holder means the
    name is refused once the work is done, its blobs written for nothing."""
    from sqlalchemy import select

    from zoo.db.entities import loads
    from zoo.db.models import Artifact

    holder = session.scalar(select(Artifact).where(Artifact.name == name))
    if holder is None:
        holder = queries.alias_target(session, name)
    if holder is None:
        return
    held = loads(holder.info_json) or {}
    settings = {k: v for k, v in held.items() if k not in ("signals", "source_name")}
    if holder.kind != "learngene" or settings != identity:
        raise ConflictError(
            f"The name {name!r} is already taken; choose another name=.", params=["name"]
        )


def _existing_extraction(session: Session, source_id: int, recipe: dict[str, Any]):
    from zoo.db.models import Artifact

    for edge in queries.edges(session, parent_id=source_id):
        if edge.relation == "extract" and edge.recipe == recipe:
            row = session.get(Artifact, edge.child_id)
            if row is not None and row.deleted_at is None:
                return row
    return None


def _default_name(source_name: str, recipe: dict[str, Any], content_hash: str) -> str:
    """SOURCE-RECIPE, the source's part shortened so that the recipe and a ``-HASH8``
    added on a name clash still fit in a registry name."""
    from zoo.checkpoint.names import MAX_NAME_LENGTH

    if recipe["method"] == "dwt":
        suffix = f"-dwt-{recipe['wavelet']}-l{recipe['levels']}"
    else:
        suffix = f"-dct-k{recipe['keep']:g}"
    if recipe.get("order", "stored") != "stored":
        suffix += f"-{recipe['order']}"
    room = MAX_NAME_LENGTH - len(suffix) - len(f"-{content_hash[:8]}")
    return source_name[:room].rstrip(".-") + suffix


def _also_named(session: Session, artifact_id: int, name: str, by: str) -> ArtifactInfo:
    from zoo.db.models import Artifact

    row = session.get(Artifact, artifact_id)
    queries.also_named(session, row, name, what="learngene", by=by)
    return queries.to_info(session, row)
