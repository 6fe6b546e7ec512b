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
from typing import Any

from sqlalchemy.orm import Session

from zoo import __version__
from zoo.db import queries
from zoo.db.entities import ArtifactInfo
from zoo.errors import InvalidInputError

EXTRACT_METHODS = ("dwt", "dct")
DEFAULT_LEVELS = 2
DEFAULT_WAVELET = "db2"
DEFAULT_KEEP = 0.5


def check_wavelet(wavelet: str) -> None:
    """Refuse a name that is not a discrete wavelet PyWavelets knows."""
    import pywt

    if wavelet not in pywt.wavelist(kind="discrete"):
        raise InvalidInputError(
            f"Unknown wavelet {wavelet!r}; any discrete wavelet PyWavelets knows works "
            "(haar, db2, coif3, sym8, bior6.8...)."
        )


def band_name(signal: str, level: int) -> str:
    return f"{signal}@dwt{level}"


def full_name(signal: str) -> str:
    return f"{signal}@full"


def extract_recipe(
    method: str,
    *,
    wavelet: str | None,
    levels: int | None,
    keep: float | None,
    order: str = "stored",
) -> dict[str, Any]:
    """The normalized settings of an extraction (its identity besides the source)."""
    from zoo.transforms import TRANSFORM_VERSION
    from zoo.unit_order import check_order

    check_order(order)
    # The default order is left out, so learngenes extracted before orders existed
    # keep their identity.
    ordered = {} if order == "stored" else {"order": order}

    if method == "dwt":
        # db2: the wavelet of every dwt entry in zoo/defaults.py (the transfer benchmark).
        wavelet = wavelet or DEFAULT_WAVELET
        check_wavelet(wavelet)
        levels = DEFAULT_LEVELS if levels is None else levels
        if levels < 1:
            raise InvalidInputError(f"--levels must be at least 1, got {levels}.")
        if keep is not None:
            raise InvalidInputError("--keep applies to --method dct, not dwt.")
        return {
            "method": "dwt",
            "wavelet": wavelet,
            "levels": levels,
            **ordered,
            "transform_version": TRANSFORM_VERSION,
        }
    if method == "dct":
        keep = DEFAULT_KEEP if keep is None else keep
        if not 0 < keep <= 1:
            raise InvalidInputError(f"--keep must be in (0, 1], got {keep}.")
        if wavelet is not None or levels is not None:
            raise InvalidInputError("--wavelet and --levels apply to --method dwt, not dct.")
        return {"method": "dct", "keep": keep, **ordered, "transform_version": TRANSFORM_VERSION}
    raise InvalidInputError(
        f"Unknown extraction method {method!r}; choose one of {', '.join(EXTRACT_METHODS)}."
    )


def changeable_axes(axes: tuple[str, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(i for i, role in enumerate(axes) if role in sizes)


def dwt_levels(shape: tuple[int, ...], axes: tuple[int, ...], wanted: int) -> list[int]:
    """Levels 1..wanted at which every changeable axis still halves exactly."""
    out = []
    for k in range(1, wanted + 1):
        if all(shape[a] % (2**k) == 0 and shape[a] >= 2**k for a in axes):
            out.append(k)
    return out


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
                "hold no band; use --method dct."
            )
        raise InvalidInputError(
            f"--levels {wanted}: the axes of {source_name} halve exactly at most {reachable} "
            f"times; ask for {reachable} or fewer."
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
    """Extract (once) a learngene from a registered checkpoint."""
    from zoo.checkpoint import manifest_hash, validate_name
    from zoo.derive import signal_stats
    from zoo.families import get_family
    from zoo.transforms import dwt_approx, front_extract
    from zoo.unit_order import ordered

    from . import tensors as tio

    if name is not None:
        validate_name(name)
    recipe = extract_recipe(method, wavelet=wavelet, levels=levels, keep=keep, order=order)
    with reg.session() as session:
        src = queries.resolve(session, source, kinds=("source", "derived"))
        existing = _existing_extraction(session, src.id, recipe)
        if existing is not None:
            return queries.to_info(session, existing)
        src_info = queries.to_info(session, src)
    family = get_family(src_info.family)
    dev = tio.resolve_device(device)
    if src_info.virtual:
        # Recipe only: its weights are re-derived on their recorded device and verified.
        from .materialize import virtual_weights

        state = virtual_weights(reg, src_info, src_info.tensors, dev, None)
    else:
        state = tio.load_tensors(reg.store, src_info.tensors, device=dev)
    sizes = family.axis_sizes(src_info.config)
    signals = ordered(family.to_signals(state, src_info.config), order)
    if recipe["method"] == "dwt":
        _check_levels(signals, sizes, recipe["levels"], src_info.name)

    out_tensors = {}
    signal_info: dict[str, Any] = {}
    for key in sorted(signals):
        sig = signals[key]
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
            out_tensors[full_name(key)] = sig.tensor
            entry["full"] = True
        elif recipe["method"] == "dwt":
            bands = dwt_levels(tuple(sig.tensor.shape), axes, recipe["levels"])
            per_layer = family.unchanged_outputs(key) == "layers"
            for k in bands:
                band = dwt_approx(sig.tensor, axes=axes, level=k, wavelet=recipe["wavelet"])
                out_tensors[band_name(key, k)] = band
                if per_layer:
                    entry.setdefault("layer_digests", {})[str(k)] = tio.layer_digests(band)
            entry["levels"] = bands
        else:
            layer_axis = sig.axes.index("layers") if "layers" in sig.axes else None
            # Only axes that can change are low-passed; vocab, positions... stay whole.
            keep = [recipe["keep"] if i in axes else 1.0 for i in range(sig.tensor.dim())]
            block = front_extract(sig.tensor, keep=keep, layer_axis=layer_axis)
            out_tensors[f"{key}@dct.block"] = block.block
            out_tensors[f"{key}@dct.mean"] = block.means
            out_tensors[f"{key}@dct.std"] = block.stds
            entry["layer_axis"] = layer_axis
        signal_info[key] = entry

    # Blobs before rows.
    recs = tuple(sorted(tio.store_tensors(reg.store, out_tensors), key=lambda t: t.name))
    info = {
        **recipe,
        "source": src_info.content_hash,
        "source_name": src_info.name,
        "signals": signal_info,
    }
    content_hash = manifest_hash({"learngene": info}, recs)
    default_name = _default_name(src_info.name, recipe, content_hash)

    def link(session: Session, row) -> ArtifactInfo:
        parent = session.get(type(row), src_info.id)
        queries.add_edge(
            session,
            parent=parent,
            child=row,
            relation="extract",
            recipe=recipe,
            zoo_version=__version__,
            by=reg.user,
        )
        # Same content hash, same tensor records: no need to read them back.
        return dataclasses.replace(queries.to_info(session, row, tensors=False), tensors=recs)

    def find(session: Session):
        row = queries.find_by_content(session, "learngene", content_hash)
        if row is None:
            return None
        if row.deleted_at is not None:  # extracting again brings it back
            row.deleted_at = None
        return link(session, row)

    def insert(session: Session) -> ArtifactInfo:
        found = find(session)
        if found is not None:
            return found
        chosen = name or default_name
        if queries.name_taken(session, chosen):
            if name:
                from zoo.errors import ConflictError

                raise ConflictError(f"The name {name!r} is already taken; choose another --name.")
            chosen = f"{default_name}-{content_hash[:8]}"
        row = queries.insert_artifact(
            session,
            kind="learngene",
            name=chosen,
            family=src_info.family,
            content_hash=content_hash,
            config=src_info.config,
            info=info,
            tensors=recs,
            created_by=reg.user,
            layers=src_info.layers,
            hidden=src_info.hidden,
        )
        return link(session, row)

    return reg.transaction(insert, on_conflict=find)


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
