"""Materializing a checkpoint of any size, and re-deriving a recorded one.

The flow: plan (:mod:`zoo.api.plan`: names, recipe, sizes), check that the work fits
(memory, disk), derive group by group (:mod:`zoo.api.derivation`) into a sink that hashes
every tensor and writes it to an output folder, the blob store or memory, then record
(:mod:`zoo.api.record`). Rows come after what they describe: blobs are stored, and an
output folder is renamed into place, before the derived checkpoint's row is written.

Every materialization is recorded as a derived checkpoint (recipe + manifest hash), kept
virtual (recipe only) unless ``store``. Because derivation is deterministic on a device, a
virtual checkpoint can be re-derived and verified bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.db import queries
from zoo.db.entities import ArtifactInfo
from zoo.derive import Recipe
from zoo.errors import (
    DeviceUnavailableError,
    InterruptedAfterWriting,
    InvalidInputError,
    InvalidTargetError,
    NotFoundError,
    VerificationError,
)

from .derivation import Derivation, Sink, source_records
from .plan import MaterializeRequest, Plan, make_plan, source_of
from .record import derived_name, parent_live, provenance, record_derived

if TYPE_CHECKING:
    import torch

    from .tensors import KnownDigests

#: Share of the memory a device reports available that a derivation may plan to use: the
#: estimate of a group's working set is not exact, and other work shares the machine.
MEMORY_MARGIN = 0.8


@dataclass(frozen=True)
class Materialized:
    """What :meth:`zoo.Registry.materialize` returns.

    Attributes:
        state_dict: the target's tensors on the requested device; ``None`` when they were
            streamed to an output folder (load it with ``from_pretrained``).
        config: the target's config.json as a dict.
        artifact: the derived checkpoint recorded in the registry.
        out: the HF folder written, if one was asked for.
        warnings: one line for each way the result is not what its method promises (a
            function-keeping method whose target regroups the attention heads).
    """

    state_dict: dict[str, torch.Tensor] | None
    config: dict[str, Any]
    artifact: ArtifactInfo
    out: Path | None = None
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        # What was made, not every tensor's values: a notebook shows a call's result, and
        # a state dict's repr runs to a screenful of numbers per tensor.
        return _summary(self, self.state_dict)


def _summary(made, state_dict) -> str:
    """``Materialized(artifact=NAME, state_dict=<N tensors, on DEVICE>, out=PATH)``, for a
    local and a client's result alike (``state_dict`` a string when not loaded yet)."""
    if isinstance(state_dict, dict):
        devices = sorted({str(t.device) for t in state_dict.values()})
        state_dict = f"<{len(state_dict)} tensors, on {', '.join(devices) or 'no device'}>"
    return (
        f"Materialized(artifact={made.artifact.name!r}, state_dict={state_dict}, out={made.out!r})"
    )


def materialize(reg, query: str, request: MaterializeRequest) -> Materialized:
    """Build a model of the requested size; see :meth:`zoo.Registry.materialize`."""
    from . import tensors as tio
    from .arguments import CHECKED, check_materialize

    check_materialize(**{k: getattr(request, k) for k in CHECKED})
    out = _check_out(reg, request.out, request.force, request.max_shard_size)
    dev = tio.resolve_device(request.device, prefer_gpu=True)
    plan = make_plan(reg, query, request)
    # Its row is written at the end, and its blobs with --store: refuse now, not after the
    # work.
    reg.check_writable(blobs=request.store)
    check_tensor_count(plan, _expected_tensors(reg, plan))  # before the plan's every tensor
    known = tio.KnownDigests()
    derivation = Derivation(reg, plan, dev, known=known, read_virtual=_reader(reg))
    keep = out is None and request.return_weights
    workers = check_resources(derivation, dev, keep=keep, out=out)
    check_tensor_count(plan, sum(len(g.outputs) for g in derivation.groups))
    sink = Sink(
        known=known,
        store=reg.store if request.store else None,
        keep=keep,
        finite=True,  # float16 outputs (asked for, or a float16 source's under auto)
        source_digests=frozenset(t.digest for t in source_records(reg, plan)),
    )

    def finish(content_hash: str) -> ArtifactInfo:
        records = sink.sorted_records()
        return record_derived(reg, plan, records, content_hash, dev, store=request.store)

    info = _run(
        reg,
        plan,
        derivation,
        sink,
        workers,
        finish,
        out=out,
        force=request.force,
        max_shard_size=request.max_shard_size,
    )
    return Materialized(sink.state if keep else None, plan.target_config, info, out, plan.warnings)


def rederive(
    reg,
    query: str,
    *,
    out: str | Path | None = None,
    force: bool = False,
    device: str | None = None,
    max_shard_size: int | str | None = None,
    return_weights: bool = True,
) -> Materialized:
    """Re-derive a derived checkpoint from its recorded recipe and verify it bit for bit;
    with ``out``, each tensor is checked as it is written, and the folder appears only if
    every one matches. ``return_weights=False``: each tensor is hashed, checked and let
    go, so a target larger than memory is verified in what one written with ``out`` takes.

    Raises:
        VerificationError: the re-derived tensors do not hash to the recorded manifest.
    """
    from .arguments import check_device

    target = _check_out(reg, out, force, max_shard_size)
    check_device(device)
    with reg.session() as session:
        row = queries.resolve(session, query, kinds=("derived",))
        info = queries.to_info(session, row)
    plan, state = _verified(
        reg,
        info,
        device,
        out=target,
        force=force,
        max_shard_size=max_shard_size,
        keep=return_weights,
    )
    return Materialized(state, plan.target_config, info, target)


def export(reg, query: str, out: str | Path, *, force: bool = False, max_shard_size=None) -> Path:
    """Write a registered checkpoint as an HF folder; see :meth:`zoo.Registry.export`.

    A derived checkpoint is re-derived from its recipe and verified as it is written
    (that also writes its provenance into the file); a source streams from the store,
    tensor by tensor, every blob verified."""
    import json

    from . import export as folders
    from . import tensors as tio

    if out is None:
        raise InvalidInputError("export writes a folder: give out=.", params=["out"])
    target = _check_out(reg, out, force, max_shard_size)
    info = reg.show(query)
    if info.kind == "derived":
        again = rederive(reg, info.name, out=target, force=force, max_shard_size=max_shard_size)
        return again.out
    if info.kind == "placeholder":
        repo = info.info.get("repo_id", info.name)
        raise InvalidInputError(  # as materialize, extract and rederive refuse it
            f"{info.name} is a placeholder for the Hub model {repo}, which a model card names "
            f"as its base; it holds no weights: import it first "
            f"(`reg.import_checkpoint({repo!r})`)."
        )
    if info.kind != "source":
        raise InvalidInputError(
            f"{info.name} is a {info.kind}, not a checkpoint; materialize a size from it."
        )
    from .side_files import check_code, files_of

    layout = {t.name: (t.dtype, tuple(t.shape), t.nbytes) for t in info.tensors}
    folders.check_room(target, sum(t.nbytes for t in info.tensors))
    # The files imported with it, its own model card included, each blob verified.
    extra = {f.name: reg.store.get(f.digest) for f in files_of(reg, info)}
    check_code(info.name, info.config, extra)
    # Without a card of its own, one naming the library that loads it, as a derived card does.
    library = "sentence-transformers" if "modules.json" in extra else "transformers"
    card = extra.pop("README.md", b"").decode("utf-8", "replace") or (
        f"---\nlibrary_name: {library}\ntags:\n- zoo\n---\n\n"
        f"# {info.name}\n\nA source checkpoint registered in zoo ({info.content_hash}).\n"
        "Audit a copy with `zoo audit PATH`.\n"
    )
    metadata = {
        "format": "pt",
        "zoo.source": json.dumps({"name": info.name, "content_hash": info.content_hash}),
    }
    shard = folders.parse_size(max_shard_size or folders.DEFAULT_SHARD_SIZE)
    with (
        _journal(reg, target),
        folders.OutputFolder(
            target,
            layout,
            force=force,
            **guards(reg, target),
            max_shard_size=shard,
        ) as folder,
    ):

        def copy(record) -> None:
            folder.put(record.name, tio.raw_bytes(tio.read_tensor(reg.store, record)))

        tio.parallel_map(
            copy,
            list(info.tensors),
            cost=[t.nbytes for t in info.tensors],
            min_cost=tio.store_min_cost(reg.store),
        )
        return folder.commit(
            config=info.config or {}, metadata=metadata, card=card, extra_files=extra
        )


# --- the steps -------------------------------------------------------------------------------


def _check_out(reg, out, force: bool, max_shard_size) -> Path | None:
    """Refuse, before any work, an output option that cannot be honoured."""
    from . import export

    if out is None:
        if force:
            raise InvalidInputError(
                "force=True replaces a previous out= folder; give out=.", params=["force", "out"]
            )
        if max_shard_size is not None:
            raise InvalidInputError(
                "max_shard_size= applies to out=; give out=.", params=["max_shard_size", "out"]
            )
        return None
    if max_shard_size is not None:
        export.parse_size(max_shard_size)
    out = export.out_path(out)
    export.check_out_dir(out, force=force, **guards(reg, out))
    return out


def guards(reg, out: Path | None = None) -> dict[str, list[Path]]:
    """What an output folder must not be or hold (``protected``: the registry's home,
    database and blob store, and, when ``out`` would replace a folder, the folders sources
    were imported from) and must not lie in (``stores``: a local blob store)."""
    from sqlalchemy.engine import make_url

    settings = reg.settings
    protected = [settings.home]
    stores = []
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        protected.append(Path(url.database))
    if "://" not in settings.store_url or settings.store_url.startswith("file://"):
        stores.append(Path(settings.store_url.removeprefix("file://")))
    from .export import is_folder

    if out is not None and is_folder(out) and any(out.iterdir()):
        from zoo.db.models import ImportRecord

        with reg.session() as session:
            where = ImportRecord.origin == str(out.resolve())
            protected += [
                Path(o) for o in session.scalars(queries.select(ImportRecord.origin).where(where))
            ]
    return {
        "protected": [p.expanduser() for p in (*protected, *stores)],
        "stores": [p.expanduser() for p in stores],
    }


def _expected_tensors(reg, plan: Plan) -> int:
    """How many tensors the target holds, from the source's names alone: those outside
    the layer stack, plus the source's per-layer tensors for each target layer. Planning
    every tensor of a mistyped ``--layers 100000`` would take minutes before the count
    refused it."""
    from .derivation import source_records

    layers = [plan.family.layer_index(r.name) for r in source_records(reg, plan)]
    per_layer = sum(1 for i in layers if i is not None) / max(plan.source_sizes["layers"], 1)
    return layers.count(None) + round(per_layer * plan.target_sizes["layers"])


def check_tensor_count(plan: Plan, count: int) -> None:
    """Refuse, before any work, a target of ``count`` tensors, more than zoo accepts in
    one checkpoint: zoo could not import it back, and every tensor costs a registry row
    (a mistyped ``--layers 100000`` would otherwise write millions of tensors).
    Re-derivation does not check: what was recorded is re-derived as it was."""
    from zoo.checkpoint.safetensors_format import MAX_TENSORS

    if count > MAX_TENSORS:
        sizes = plan.target_sizes
        raise InvalidTargetError(
            f"A {sizes['layers']}x{sizes['hidden']} {plan.source.family} would hold "
            f"{count:,} tensors, more than the {MAX_TENSORS:,} zoo accepts in one "
            "checkpoint (it could not import it back); ask for fewer layers."
        )


def check_resources(derivation: Derivation, dev, *, keep: bool, out: Path | None) -> int:
    """How many groups may be derived at once; refuses, before any work, a target whose
    derivation would not fit the memory ``dev`` has (the whole target when it is kept
    in memory, else the largest group's working set) or an output the disk cannot hold."""
    from zoo import _memory

    from . import export

    plan = derivation.plan
    have = _memory.available_bytes(dev)
    # What the target's signals alone already rule out is refused in milliseconds; the
    # exact sizes below plan every tensor, which takes seconds for a mistyped size.
    least = derivation.least_target_bytes
    if out is not None:
        export.check_room(out, least)
    if keep and have is not None and least > have * MEMORY_MARGIN:
        raise InvalidTargetError(
            f"A {_what(plan)} holds {export.decimal_bytes(least)} of weights, "
            f"{_room(have, dev)}; "
            "write it with out= (which streams it), or ask for fewer layers or a smaller "
            "hidden size.",
            params=["out"],
        )
    group = derivation.largest_working_set
    whole = derivation.target_bytes if keep else 0
    workers = os.cpu_count() or 1
    if have is not None:
        usable = int(have * MEMORY_MARGIN)
        budget = usable - whole
        if budget < group:
            what, room = _what(plan), _room(have, dev)
            if keep:
                raise InvalidTargetError(
                    f"A {what} holds {whole / 1e9:.1f} GB of weights and needs "
                    f"{(whole + group) / 1e9:.1f} GB while it is derived, {room}; write it "
                    "with out= (which streams it), or ask for fewer layers or a smaller "
                    "hidden size.",
                    params=["out"],
                )
            raise InvalidTargetError(
                f"A {what} needs {group / 1e9:.1f} GB for its largest part while it is "
                f"derived, {room}; ask for fewer layers or a smaller hidden size."
            )
        workers = max(1, min(workers, budget // max(group, 1)))
    if out is not None:
        export.check_room(out, derivation.target_bytes)
    return workers


def _what(plan: Plan) -> str:
    sizes = plan.target_sizes
    return f"{sizes['layers']}x{sizes['hidden']} {plan.source.family}"


def _room(have: int, dev) -> str:
    usable = int(have * MEMORY_MARGIN)
    return (
        f"more than the {usable / 1e9:.1f} GB zoo plans to use of the "
        f"{have / 1e9:.1f} GB available on {dev.type}"
    )


def _run(
    reg,
    plan: Plan,
    derivation: Derivation,
    sink: Sink,
    workers: int,
    finish,
    *,
    out: Path | None,
    force: bool = False,
    max_shard_size: int | str | None = None,
    verify=None,
) -> ArtifactInfo:
    """Derive into ``sink``, run ``verify(sink)`` (it raises on a mismatch), then
    ``finish(content_hash)`` records the result. With ``out`` the tensors stream into an
    output folder, renamed into place just before ``finish``. A re-derivation (``verify``)
    records nothing: it writes its folder under a parent removed since (a kept checkpoint
    keeps what it derives from)."""
    from zoo.checkpoint import manifest_hash

    from . import export

    if out is None:
        derivation.run(sink, workers=workers)
        if verify is not None:
            verify(sink)
        return finish(manifest_hash(plan.target_config, sink.sorted_records()))
    from .cards import holds_source_weights, model_card
    from .record import recorded_method
    from .side_files import check_code, files_config, fit_to_width, out_files, source_card_of

    shard = export.parse_size(max_shard_size or export.DEFAULT_SHARD_SIZE)
    # The source's tokenizer, configs, license, code and pipeline travel with the weights
    # (read, and verified, before any work).
    carried = out_files(reg, plan.source)
    check_code(plan.source.name, plan.target_config, carried)
    # The width the carried pipeline was written for: the source's that imported it, also
    # where the parent is a checkpoint zoo derived at another width.
    written_for = files_config(reg, plan.source)
    files_width = (
        plan.family.axis_sizes(written_for).get("hidden")
        if written_for
        else plan.source_sizes.get("hidden")
    )
    extra = fit_to_width(carried, files_width, plan.target_sizes.get("hidden"))
    fitted = sorted(n for n in extra if extra[n] != carried[n])
    left_out = sorted(set(carried) - set(extra))
    source_card = source_card_of(reg, plan.source)
    with (
        _journal(reg, out),
        export.OutputFolder(
            out,
            derivation.layout,
            force=force,
            **guards(reg, out),
            max_shard_size=shard,
        ) as folder,
    ):
        sink.folder = folder
        derivation.run(sink, workers=workers)
        if verify is not None:
            verify(sink)
        content_hash = manifest_hash(plan.target_config, sink.sorted_records())
        name = derived_name(reg, plan, content_hash)
        if verify is None:
            with reg.session() as session:  # no folder for a record that would be refused
                parent_live(session, plan)
        with _interrupts_deferred():  # the folder and its row appear together
            folder.commit(
                config=plan.target_config,
                metadata=provenance(plan, name, content_hash),
                card=model_card(
                    plan,
                    name,
                    content_hash,
                    source_card,
                    sorted(extra),
                    recorded_method(reg, content_hash, plan.parent.id),
                    fitted,
                    holds_source_weights(
                        sink.sorted_records(),
                        source_records(reg, plan),
                        derivation.family,
                        plan.source.config,
                    ),
                    left_out,
                    files_width,
                ),
                extra_files=extra,
            )
            try:
                return finish(content_hash)
            except BaseException:
                folder.take_back()  # no row for it: it goes, what it replaced comes back
                raise


@contextlib.contextmanager
def _journal(reg, out: Path) -> Iterator[None]:
    """A journal row while ``out`` is written: if the writer is killed, ``zoo fsck`` finds
    what it left beside ``out`` from it."""
    from .export import writer_host

    host, pid = writer_host(), os.getpid()
    row = reg.transaction(lambda s: queries.add_output(s, str(out.resolve()), host, pid))
    try:
        yield
    finally:
        reg.transaction(lambda s: queries.remove_output(s, row))


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C back for the block (a rename and a commit), then act on it: the
    output folder and the row that describes it appear together or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise InterruptedAfterWriting(
            "interrupted after the output folder and its record were complete: both are kept"
        )


# --- re-derivation ----------------------------------------------------------------------------


def _recorded_plan(reg, info: ArtifactInfo, device: str | None, *, as_parent: bool):
    """The plan ``info``'s lineage edge recorded, and the device its bits come from (the
    recorded one unless ``device`` names another)."""
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
        source = source_of(session, parent) if learngene else parent
    r = edge.recipe
    recipe = Recipe(
        method=r["method"],
        wavelet=r.get("wavelet"),
        rescale=r["rescale"],
        seed=r["seed"],
        norm=r.get("norm", "method"),
        depth=r.get("depth", "method"),
        order=r.get("order", "stored"),
        dtype=r.get("dtype", "auto"),
    )
    try:
        dev = tio.resolve_device(device or r["device"])
    except DeviceUnavailableError as exc:
        if device:
            raise
        # Its bits are reproduced on the recorded device; another may round differently.
        missing = f"{info.name} was derived on {r['device']}, which is not available here"
        raise DeviceUnavailableError(
            f"{missing}; it is virtual: keep its weights on such a machine with the "
            "`reg.materialize()` that made it plus store=True, then use it anywhere."
            if as_parent
            # The call that takes a device, whichever one read it (an export takes none).
            else f"{missing}; re-derive it on a machine with one, or here with "
            f"`reg.rederive({info.name!r}, device='cpu')`, with out= to write it (its bits may "
            "then differ and fail verification).",
            params=["store"] if as_parent else ["out"],
        ) from exc
    # Statistics over the whole tensor until transform version 4 (zoo.transforms.moments),
    # the amplitude rule, net2net's and HyperCloning's copies and the dtype a signal is
    # derived in of the versions recorded (zoo.methods.amplitude, zoo.methods.net2net,
    # zoo.methods.hypercloning, zoo.derive; none recorded: 1).
    version = r.get("transform_version")
    plan = Plan(
        parent,
        source,
        learngene,
        recipe,
        r["target_config"],
        legacy_whole_moments=version in ("1", "2", "3"),
        amplitude_version=int(r.get("amplitude_version", "1")),
        net2net_version=int(r.get("net2net_version", "1")),
        hypercloning_version=int(r.get("hypercloning_version", "1")),
        dtype_version=int(r.get("dtype_version", "1")),
    )
    return plan, dev, r


def _other_cpu(recorded: dict, dev) -> str:
    """The clause " by the CPU ..." when ``recorded`` names a CPU other than this one
    (model or instruction set), whose kernels may round differently; else ""."""
    from zoo._machine import cpu

    then = recorded.get("cpu")
    if dev.type != "cpu" or not then:
        return ""
    here = cpu()
    if then == here:
        return ""
    return (
        f" by the CPU {then.get('model')!r} ({then.get('capability')}), and this one is "
        f"{here['model']!r} ({here['capability']}): another CPU may round differently, so "
        "re-derive it on a machine like the one that recorded it"
    )


def _verified(
    reg,
    info: ArtifactInfo,
    device: str | None,
    *,
    out: Path | None = None,
    force: bool = False,
    max_shard_size: int | str | None = None,
    as_parent: bool = False,
    keep: bool = True,
):
    """``info``'s recorded recipe run again and checked against its manifest; returns the
    plan and (when not written to ``out``, and ``keep``) the state. ``as_parent``: it is
    read as the source of another derivation (an error says so)."""
    from . import tensors as tio

    if not info.tensors:  # loaded without them (see plan.source_of)
        from zoo.db.models import Artifact

        with reg.session() as session:
            info = queries.to_info(session, session.get(Artifact, info.id))
    plan, dev, recorded = _recorded_plan(reg, info, device, as_parent=as_parent)
    expected = {t.name: t.digest for t in info.tensors}
    candidates = [plan, *_legacy_variants(plan, recorded)]
    differ: list[str] = []

    def verify(sink: Sink) -> None:
        differ[:] = sorted(set(sink.differ) | (set(expected) ^ set(sink.records)))
        if differ:
            raise VerificationError(
                f"Re-deriving {info.name} on {dev.type} gave different tensors "
                f"({len(differ)} differ, e.g. {', '.join(differ[:3])}); recorded on "
                f"{recorded['device']} with transforms {recorded['transform_version']}"
                f"{_other_cpu(recorded, dev)}."
            )

    for i, candidate in enumerate(candidates):
        known = tio.KnownDigests()
        derivation = Derivation(
            reg,
            candidate,
            dev,
            known=known,
            recorded_layer_digests=False,
            read_virtual=_reader(reg),
        )
        held = out is None and keep
        workers = check_resources(derivation, dev, keep=held, out=out)
        sink = Sink(known=known, keep=held, expected=expected)
        try:
            _run(
                reg,
                candidate,
                derivation,
                sink,
                workers,
                lambda _hash: info,
                out=out,
                force=force,
                max_shard_size=max_shard_size,
                verify=verify,
            )
        except VerificationError:
            if i == len(candidates) - 1:
                raise
            continue
        return candidate, (sink.state if held else None)
    raise AssertionError("unreachable")


def _legacy_variants(plan: Plan, recorded: dict[str, Any]) -> list[Plan]:
    """The plan under zoo's earlier FRONT rules (same transform version), for checkpoints
    recorded then; each is tried after the current rules and kept only if it gives the
    recorded bytes."""
    if plan.learngene is None or plan.recipe.method != "dct":
        return []
    front = [False, True] if _maybe_legacy_front(plan, recorded) else [False]
    variants = [
        dataclasses.replace(plan, legacy_front_amplitude=f, legacy_dct_unchanged=u)
        for f in front
        for u in (False, True)
    ]
    return variants[1:]


def _maybe_legacy_front(plan: Plan, recorded: dict[str, Any]) -> bool:
    """Could this checkpoint have been derived under the old FRONT amplitude rule?"""
    return (
        plan.learngene is not None
        and plan.recipe.method == "dct"
        and plan.recipe.rescale in ("std", "fan")
        and recorded.get("transform_version") == "3"
    )


def _reader(reg):
    """How a derivation reads a virtual source: re-derived and verified."""
    return lambda info, records, dev, known: virtual_weights(reg, info, records, dev, known)


def virtual_weights(
    reg, info: ArtifactInfo, records, dev, known: KnownDigests | None
) -> dict[str, torch.Tensor]:
    """A virtual checkpoint's weights (those ``records`` name), re-derived on the device it
    was recorded on (the only one that gives its bytes) and verified, then moved to ``dev``."""
    _, state = _verified(reg, info, None, as_parent=True)
    digests = {t.name: t.digest for t in records}
    out = {}
    for r in records:
        t = state[r.name]
        if known is not None:
            known.add(t, digests[r.name])
        out[r.name] = t.to(dev)
    return out


def family_default(reg, family: str) -> ArtifactInfo | None:
    """The learngene ``zoo materialize FAMILY`` uses by ``zoo default``, or None where none
    is set (or the one set was removed)."""
    from zoo.families import get_family

    family = get_family(family).name
    with reg.session() as session:
        row = queries.family_default(session, family)
        if row is None or row.deleted_at is not None:
            return None
        return queries.to_info(session, row)


def set_default(reg, family: str, query: str) -> ArtifactInfo:
    """Make ``query`` (a learngene) what a bare family name materializes from."""
    from sqlalchemy.orm import Session

    from zoo.families import get_family

    family = get_family(family).name  # in any case, as `zoo ls --family` takes it

    def work(session: Session) -> ArtifactInfo:
        row = queries.resolve(session, query, kinds=("learngene",))
        if row.family != family:
            raise InvalidInputError(
                f"{row.name} is a {row.family} learngene, not {family}; pick a {family} one."
            )
        queries.set_family_default(session, family, row)
        return queries.to_info(session, row)

    return reg.transaction(work)
