"""Planning a materialization: from a request to everything decided before any tensor.

A :class:`MaterializeRequest` is what the user asked (target size, recipe options, where
the result goes); :func:`make_plan` resolves the names, fills the recipe from the
learngene's settings and zoo's measured defaults, sizes the target, refuses what cannot be
built, and returns a :class:`Plan` that the derivation and the record then read: the
family and the sizes are decided here once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from zoo.db import queries
from zoo.db.entities import ArtifactInfo
from zoo.derive import DTYPE_VERSION, Recipe, layer_map
from zoo.errors import AmbiguousNameError, InvalidInputError, NotFoundError
from zoo.methods.amplitude import AMPLITUDE_VERSION
from zoo.methods.hypercloning import HYPERCLONING_VERSION
from zoo.methods.net2net import NET2NET_VERSION

from .catalog import resizable
from .learngene_format import DEFAULT_WAVELET, check_wavelet

if TYPE_CHECKING:
    from zoo.families.base import Family

#: Fallback when the measured defaults (zoo/defaults.py) do not apply to the method asked;
#: the wavelet falls back to extract's.
DEFAULT_RESCALE = "none"


@dataclass(frozen=True)
class MaterializeRequest:
    """What ``zoo materialize`` is asked for; ``None`` means "zoo decides".

    Attributes:
        layers, hidden, heads, intermediate, kv_heads: the target size; omitted ones keep
            head_dim and the source's intermediate/hidden ratio.
        method, wavelet, rescale, norm, depth, order, seed: the recipe
            (:class:`zoo.derive.Recipe`); omitted ones take the learngene's settings, then
            zoo's measured defaults for the family and direction.
        dtype: ``auto`` (each tensor keeps its source dtype) or float32, bfloat16, float16.
        device: where the transforms run (``cpu``, ``cuda``; default: the GPU if any).
        out: write an HF folder there; ``force`` replaces a previous output of zoo's.
        max_shard_size: bytes per weights file in ``out`` (e.g. ``"5GB"``).
        store: keep the weights in the registry (default: recipe only, re-derivable).
        return_weights: hand the weights back in memory (without ``out``); False lets each
            tensor go once it is hashed (and stored), so only a group is ever held.
    """

    layers: int
    hidden: int
    heads: int | None = None
    intermediate: int | None = None
    kv_heads: int | None = None
    method: str | None = None
    wavelet: str | None = None
    rescale: str | None = None
    seed: int | None = None
    norm: str | None = None
    depth: str | None = None
    order: str | None = None
    dtype: str = "auto"
    device: str | None = None
    out: str | Path | None = None
    force: bool = False
    max_shard_size: int | str | None = None
    store: bool = False
    return_weights: bool = True


@dataclass(frozen=True)
class Plan:
    """Everything decided about a derivation before it runs."""

    parent: ArtifactInfo  # the artifact the derivation edge hangs off
    source: ArtifactInfo  # the checkpoint whose config and signals are resized
    learngene: ArtifactInfo | None
    recipe: Recipe
    target_config: dict[str, Any]
    # Re-derivation only, for checkpoints recorded under zoo's earlier FRONT rules: a
    # block's amplitude rescaled in norm layers only, and signals whose size does not
    # change low-passed like the rest (now they are the source's own).
    legacy_front_amplitude: bool = False
    legacy_dct_unchanged: bool = False
    # Re-derivation of checkpoints recorded with transform versions up to 3: statistics
    # over the whole tensor (zoo.transforms.moments has the rule since).
    legacy_whole_moments: bool = False
    # The amplitude rule's version (zoo.methods.amplitude): a checkpoint recorded under an
    # earlier one re-derives by it (1: an output head's input width was no fan-in; 1 and
    # 2: nor was the width of the normalization only a tied head reads; 1 to 3: norms
    # were matched by sample stds; 1 to 4: the std rules gave the source's sample std,
    # and that normalization was divided by the fan-in multiplier under every rule).
    amplitude_version: int = int(AMPLITUDE_VERSION)
    # How net2net draws its copies (zoo.methods.net2net): 1, a map per tensor, for
    # checkpoints recorded before one map per set of units.
    net2net_version: int = int(NET2NET_VERSION)
    # How HyperCloning copies attention heads (zoo.methods.hypercloning): 1, tiled like
    # every axis, for checkpoints recorded before key/value heads kept their query heads.
    hypercloning_version: int = int(HYPERCLONING_VERSION)
    # The dtype a target written in another dtype than its half-precision source's is
    # derived in (zoo.derive.DTYPE_VERSION): 1, the source's, for checkpoints recorded
    # before such signals were derived in float32 and rounded once.
    dtype_version: int = int(DTYPE_VERSION)

    @cached_property
    def family(self) -> Family:
        from zoo.families import get_family

        return get_family(self.source.family)

    @cached_property
    def source_sizes(self) -> dict[str, int]:
        return self.family.axis_sizes(self.source.config)

    @cached_property
    def target_sizes(self) -> dict[str, int]:
        return self.family.axis_sizes(self.target_config)

    @property
    def deepen(self) -> bool:
        """Whether identity layers add the depth (the method keeps the source's)."""
        return (
            self.recipe.depth == "identity"
            and self.target_sizes["layers"] > self.source_sizes["layers"]
        )

    @cached_property
    def warnings(self) -> tuple[str, ...]:
        """One line for each way the result will not be what its method promises: a
        method that keeps the source's function (HyperCloning, net2net) cannot where the
        target's attention heads are not the source's heads, whole (another head_dim)."""
        from zoo.methods import get

        method = self.recipe.method
        if not get(method).keeps_function:
            return ()
        source = _head_shape(self.family, self.source.config)
        target = _head_shape(self.family, self.target_config)
        if source is None or target is None or source[1] == target[1]:
            return ()
        (sh, sd, _), (th, td, t_width) = source, target
        keep = f" (heads of {sd} would: heads={t_width // sd})" if t_width % sd == 0 else ""
        return (
            f"{th} attention heads of {td} from the source's {sh} of {sd} regroup the "
            f"attention matrices' rows into other heads: this {method} result will not "
            f"compute the source's function{keep}",
        )

    @cached_property
    def method_sizes(self) -> dict[str, int]:
        """The sizes the method itself produces (identity layers add the rest)."""
        if self.deepen:
            return {**self.target_sizes, "layers": self.source_sizes["layers"]}
        return dict(self.target_sizes)


def _head_shape(family: Family, config: dict[str, Any]) -> tuple[int, int, int] | None:
    """(query heads, head_dim, attention width) of a model of ``config``; None without
    attention or where the heads do not divide the width."""
    heads = family.attention_heads(config)
    sizes = family.axis_sizes(config)
    width = sizes.get("attn", sizes.get("hidden"))
    if heads is None or not width or width % heads[0]:
        return None
    return heads[0], width // heads[0], width


def make_plan(reg, query: str, request: MaterializeRequest) -> Plan:
    """Resolve ``query`` and fill ``request``'s recipe; refuse what cannot be built."""
    from zoo.families.base import TargetSize
    from zoo.methods import DWT, check_target, get

    with reg.session() as session:
        row = resolve_parent(session, query)
        # A learngene's records name its bands; a checkpoint's the derivation reads itself
        # (kept by content, so a source materialized again does not read them back). Its
        # files, imports and aliases are read for an output folder only (its side files
        # and card); a record alone reads none.
        parent = queries.to_info(
            session,
            row,
            tensors=row.kind == "learngene",
            parts=request.out is not None,
        )
        learngene = parent if parent.kind == "learngene" else None
        source = source_of(session, parent) if learngene else parent
    resizable(source)  # one line naming the families zoo resizes, before any work
    target = TargetSize(
        layers=request.layers,
        hidden=request.hidden,
        heads=request.heads,
        intermediate=request.intermediate,
        kv_heads=request.kv_heads,
    )
    from zoo.families import get_family

    family = get_family(source.family)
    target_config = family.target_config(source.config, target)  # refuses bad sizes early
    recipe = _recipe(
        family.axis_sizes(source.config),
        family.axis_sizes(target_config),
        source,
        learngene,
        request,
    )
    if learngene is not None and (
        not get(recipe.method).learngene  # a baseline reads the source itself
        or (
            recipe.method == learngene.info["method"] == DWT.name
            and recipe.wavelet != learngene.info.get("wavelet")
        )
    ):
        # Bands serve only their own wavelet: another is computed from the source, which
        # the lineage then names as the parent (the learngene's data played no part).
        learngene = None
        parent = source
    elif learngene is not None and recipe.method != learngene.info["method"]:
        raise InvalidInputError(
            f"{learngene.name} holds {learngene.info['method']} data, not {recipe.method}; "
            f"use method={learngene.info['method']} or name the source "
            f"{materialize_name(reg, source)}.",
            params=["method"],
        )
    plan = Plan(parent, source, learngene, recipe, target_config)
    check_target(recipe.method, plan.source_sizes, plan.method_sizes)
    # Per-layer fields (attention types) follow the source layer the recipe makes each
    # target layer from.
    depth = layer_map(recipe, plan.source_sizes["layers"], plan.target_sizes["layers"])
    target_config = _with_dtype(family.target_config(source.config, target, depth), recipe.dtype)
    from .derivation import checkpoint_records

    if family.tied_copies(source.config, checkpoint_records(reg, source)).untie:
        # It writes a head that is not the embedding: re-tying them would change its logits.
        target_config = {**target_config, "tie_word_embeddings": False}
    return dataclasses.replace(plan, target_config=target_config)


def _with_dtype(config: dict[str, Any], dtype: str) -> dict[str, Any]:
    """The target config saying the dtype its floating tensors are written in, which
    ``from_pretrained(dtype="auto")`` loads them in (and ``save_pretrained`` of the loaded
    model writes back, so an output saved again still audits as itself). ``auto`` keeps
    the source's own. Both spellings transformers has read are kept in step."""
    if dtype == "auto":
        return config
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]
    return {**config, **dict.fromkeys(keys, dtype)}


def _recipe(
    source_sizes: dict[str, int],
    target_sizes: dict[str, int],
    source: ArtifactInfo,
    learngene: ArtifactInfo | None,
    request: MaterializeRequest,
) -> Recipe:
    """Fill what the user left out: the learngene's own settings first, then zoo's
    measured defaults for this family and direction (zoo/defaults.py)."""
    from zoo.defaults import default_recipe
    from zoo.methods import either, get, taking

    method, wavelet, rescale = request.method, request.wavelet, request.rescale
    norm, depth = request.norm, request.depth
    d_method, d_wavelet, d_rescale, d_norm, d_depth = default_recipe(
        source.family, source_sizes, target_sizes
    )
    if method is None:
        method = learngene.info["method"] if learngene else d_method
    if method != d_method:  # the best measured recipe of the method asked (zoo/defaults.py)
        d_method, d_wavelet, d_rescale, d_norm, d_depth = default_recipe(
            source.family, source_sizes, target_sizes, method
        )
    takes = get(method).options
    if "wavelet" in takes and wavelet is None:
        if learngene is not None and learngene.info["method"] == method:
            wavelet = learngene.info["wavelet"]
        else:
            wavelet = d_wavelet if d_method == method else DEFAULT_WAVELET
    if "wavelet" not in takes and wavelet is not None:
        raise InvalidInputError(
            f"wavelet= applies to method={either(taking('wavelet'))} only.",
            params=["wavelet", "method"],
        )
    if "wavelet" in takes:
        check_wavelet(wavelet)
    if rescale is not None and rescale != "none" and "rescale" not in takes:
        raise InvalidInputError(
            f"rescale= applies to method={either(taking('rescale'))}, not {method}; "
            "use norm='match' to match normalization layers to the source.",
            params=["rescale", "method", "norm"],
        )
    if request.seed is not None and "seed" not in takes:
        # A seed that changes nothing would record a second recipe for the same weights.
        raise InvalidInputError(
            f"seed= seeds method={either(taking('seed'))}; {method} draws no random numbers.",
            params=["seed", "method"],
        )
    if norm == "match" and "norm" not in takes:
        # Checked on the request, not the Recipe: recipes recorded before are re-derived.
        raise InvalidInputError(
            f"norm='match' sets transferred normalization layers to the source's; "
            f"{method} transfers none.",
            params=["norm"],
        )
    if rescale is None:
        rescale = d_rescale if method == d_method else DEFAULT_RESCALE
    # The measured norm and depth rules go with the measured recipe, not with any other.
    measured = (d_method, d_wavelet, d_rescale)
    same = (method, wavelet if "wavelet" in takes else None, rescale) == measured
    if norm is None:
        norm = d_norm if same else "method"
    deeper = target_sizes["layers"] > source_sizes["layers"]
    if depth == "identity" and not deeper:
        raise InvalidInputError(
            f"depth='identity' adds layers, but the target has {target_sizes['layers']} "
            f"and the source {source_sizes['layers']}.",
            params=["depth"],
        )
    if depth is None:
        # Without added layers the rule changes nothing: one recipe, one artifact.
        depth = d_depth if same and deeper and "depth" in takes else "method"
    return Recipe(
        method=method,
        wavelet=wavelet if "wavelet" in takes else None,
        rescale=rescale,
        seed=request.seed or 0,
        norm=norm,
        depth=depth,
        order=_order(learngene, method, request.order),
        dtype=request.dtype,
    )


def _order(learngene: ArtifactInfo | None, method: str, order: str | None) -> str:
    """The unit order: a learngene's bands were taken in the order it was extracted in,
    so its dwt/dct recipes have that order; everything else reads the source in the
    order asked (default as stored)."""
    from zoo.methods import get
    from zoo.unit_order import check_order

    if order is not None:
        check_order(order)
    if learngene is None or not get(method).learngene:
        return order or "stored"
    extracted = learngene.info.get("order", "stored")
    if order is not None and order != extracted:
        raise InvalidInputError(
            f"{learngene.name} was extracted in unit order {extracted!r}, not {order!r}; "
            f"extract one with order={order!r}, or leave order= out.",
            params=["order"],
        )
    return extracted


def resolve_parent(session: Session, query: str):
    """A family name with a default set (`zoo default`) means that default, whatever else
    has that name; otherwise a name, alias or hash; or a family name, meaning its only
    learngene."""
    from zoo.families import FAMILY_NAMES

    queries.check_lookup(query)
    if query in FAMILY_NAMES:
        row = queries.family_default(session, query)
        if row is not None and row.deleted_at is None:
            return row
    try:
        return queries.resolve(session, query)
    except NotFoundError:
        # BERT is the family bert where no artifact has that name, as `zoo default BERT`
        # and `zoo ls --family BERT` read it.
        if query.lower() not in FAMILY_NAMES:
            raise
    if query not in FAMILY_NAMES:
        query = query.lower()
        row = queries.family_default(session, query)
        if row is not None and row.deleted_at is None:
            return row
    candidates = queries.list_artifacts(session, kind="learngene", family=query, limit=2)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        sources, listed = _listed(session, "source", query)
        hint = (
            f" Extract one with `reg.extract({sources[0]!r})`, or name a source: {listed}."
            if sources
            else f" Import a {query} checkpoint first."
        )
        raise NotFoundError(
            f"No {query} learngene is registered.{hint}", query=query, suggestions=sources
        )
    names, listed = _listed(session, "learngene", query)
    raise AmbiguousNameError(
        f"Several {query} learngenes qualify ({listed}); name one, or set the "
        f"default with `zoo default {query} NAME`.",
        candidates=names,
    )


# The most names a refusal lists: a family can have thousands of sources or learngenes.
LISTED = 5


def _listed(session, kind: str, family: str) -> tuple[list[str], str]:
    """The first :data:`LISTED` ``kind`` artifacts of ``family``, and their names as a
    message lists them: with how many more there are, and the command that lists them."""
    names = [
        r.name for r in queries.list_artifacts(session, kind=kind, family=family, limit=LISTED)
    ]
    listed = ", ".join(names)
    if len(names) == LISTED:  # fewer: they are all there is
        more = queries.count_artifacts(session, kind=kind, family=family) - LISTED
        if more > 0:
            listed += f" and {more:,} more (`reg.list(kind={kind!r}, family={family!r})`)"
    return names, listed


def materialize_name(reg, info: ArtifactInfo) -> str:
    """What `zoo materialize` takes to mean ``info``: its name, or its hash prefix where
    the name is a family's whose default (`zoo default`) it would mean instead."""
    from zoo.families import FAMILY_NAMES

    if info.name in FAMILY_NAMES:
        with reg.session() as session:
            row = queries.family_default(session, info.name)
        if row is not None and row.deleted_at is None and row.id != info.id:
            return info.content_hash[:12]
    return info.name


def source_of(session: Session, learngene: ArtifactInfo) -> ArtifactInfo:
    """The checkpoint a learngene was extracted from (without its tensor records: a
    learngene's bands usually suffice, and the derivation reads them only when needed)."""
    from zoo.db.models import Artifact

    for edge in queries.edges(session, child_id=learngene.id):
        if edge.relation == "extract":
            row = session.get(Artifact, edge.parent_id)
            return queries.to_info(session, row, tensors=False)
    raise NotFoundError(f"Learngene {learngene.name} has no recorded source.")
