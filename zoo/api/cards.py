"""The model card (README.md) of a folder zoo materializes.

Its front matter names as ``base_model`` only a Hub repository the source's weights came
from (zoo.api.side_files.source_card_of), never a name that only this registry knows: the
Hub, and any registry importing the folder, read it as a repository id. It carries the
source's license, which the weights inherit. Its text says what the weights are: an
initialization derived from the source by a recipe, not a trained model, or, where the
derivation gave back the source's own content (or every weight of it, its tied copies
written once), the source's weights as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: Front-matter keys a derived card takes from its source's card.
INHERITED = ("license", "license_name", "license_link")

#: The tags of the card zoo writes for a folder it derived; an import reads them to tell
#: that card from a model's own.
DERIVED_TAGS = ("zoo", "learngene")

# A link within the model's own folder (``LICENSE``), not a URL.
_URL = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _listed(value: Any) -> str:
    """A front-matter value in the card's text: each of a list's items in backticks."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return ", ".join(f"`{item}`" for item in items)


def holds_source_weights(records, source_records, family, config) -> bool:
    """Whether every tensor of ``records`` (a derived checkpoint's) is the source's tensor
    of that name, bit for bit, and every source tensor it lacks is a buffer transformers
    rebuilds from the config or a tied copy (under ``family`` and the source's
    ``config``) of a tensor it holds with the same bytes: a tied head stored beside its
    embedding, which a derived checkpoint writes once, as transformers saves it. Such a
    checkpoint is the source's weights under another content hash."""

    def key(t) -> tuple:
        return (t.digest, t.dtype, tuple(t.shape))

    mine = {t.name: key(t) for t in records}
    theirs = {t.name: t for t in source_records}
    if not mine or any(n not in theirs or key(theirs[n]) != k for n, k in mine.items()):
        return False
    lacking = [n for n in theirs if n not in mine]
    partners = family.tied_partners(config, list(theirs)) if lacking else {}
    return all(
        family.is_buffer(n) or (n in partners and mine.get(partners[n]) == key(theirs[n]))
        for n in lacking
    )


def model_card(
    plan,
    name: str,
    content_hash: str,
    source=None,
    carried: Sequence[str] = (),
    recorded_method: tuple[str | None, str | None] = (None, None),
    fitted: Sequence[str] = (),
    source_weights: bool = False,
    left_out: Sequence[str] = (),
    pipeline_width: int | None = None,
) -> str:
    """The card of the derived checkpoint ``name`` (``content_hash``) that ``plan``
    derives; ``source`` is what the source's own card says (a
    zoo.api.side_files.SourceCard), ``carried`` the names of the source's files the
    folder holds besides weights, config and card (``fitted``: those of them set to the
    output's width), ``recorded_method`` the method of the record that already held this
    content and that of the edge the parent already has into it (record.recorded_method),
    ``source_weights`` whether its every weight is the source's
    (:func:`holds_source_weights`), ``left_out`` the source's files it does not hold (a
    sentence-transformers Dense module, which takes the width the pipeline was written
    for, ``pipeline_width``: the source's that imported it)."""
    import yaml

    from zoo import __version__

    from .side_files import SourceCard

    source = source or SourceCard()
    src = plan.source
    meta: dict[str, Any] = {}
    if source.bases:
        meta["base_model"] = source.bases[0] if len(source.bases) == 1 else list(source.bases)
    meta |= {k: source.meta[k] for k in INHERITED if source.meta.get(k) not in (None, "")}
    link = meta.get("license_link")
    dropped_link = (
        isinstance(link, str) and not _URL.match(link) and link.lstrip("./") not in carried
    )
    if dropped_link:  # a file of the source's folder this one does not hold
        del meta["license_link"]
    # A folder carrying a sentence-transformers pipeline is that library's to load, as its
    # source's card and the Hub label it; any other, transformers'.
    library = "sentence-transformers" if "modules.json" in carried else "transformers"
    meta |= {"library_name": library, "tags": list(DERIVED_TAGS)}
    recipe = plan.recipe
    how = recipe.method + (f" ({recipe.wavelet})" if recipe.wavelet else "")
    rules = f"rescale `{recipe.rescale}`"
    rules += f", norm `{recipe.norm}`" if recipe.norm != "method" else ""
    rules += f", depth `{recipe.depth}`" if recipe.depth != "method" else ""
    rules += f", unit order `{recipe.order}`" if recipe.order != "stored" else ""
    lg = (
        f"- learngene: `{plan.learngene.name}` ({plan.learngene.content_hash})\n"
        if plan.learngene
        else ""
    )
    hub = f" (from the Hub model {_listed(source.bases)})" if source.bases else ""
    same = content_hash == src.content_hash or source_weights
    if content_hash == src.content_hash:
        what = (
            f"The weights and config are `{src.name}`'s{hub}, bit for bit (the same content "
            f"hash): zoo {__version__} derived them from it at its own size with {how}, "
            f"{rules}, which reproduces the source exactly.\n\n"
        )
    elif source_weights:
        what = (
            f"The weights are `{src.name}`'s{hub}, bit for bit: zoo {__version__} derived "
            f"them from it at its own size with {how}, {rules}, which reproduces every "
            "weight. The content hash differs from the source's: the tensors the source "
            "also stored as tied copies are written once (as transformers saves them), or "
            "the config differs.\n\n"
        )
    else:
        what = (
            f"The weights are an initialization that zoo {__version__} derived from "
            f"`{src.name}`{hub} with {how}, {rules}. This is an initialization, not a "
            "trained model: train it before use.\n\n"
        )
    first, from_parent = recorded_method
    if first is not None and first != recipe.method:
        what += (
            f"The registry recorded these same weights first as `{name}`, derived with "
            f"{first}; {how} gave them again, bit for bit "
        )
        # Lineage keeps one edge a parent: this recipe is recorded only from a new one.
        what += (
            f"(`zoo lineage {name}` shows both recipes).\n\n"
            if from_parent is None
            else f"(`zoo lineage {name}` keeps one recipe from each parent: from "
            f"`{plan.parent.name}`, the {from_parent} one recorded first).\n\n"
        )
    whose = "these are its weights" if same else "the weights derive from its weights"
    if "license" in meta:
        license_note = (
            f"License: {_listed(meta['license'])}, inherited from `{src.name}`: {whose}.\n\n"
        )
        if dropped_link:
            license_note = license_note[:-2] + (
                f" Its card links the license as `{link}`, a file its folder did not bring "
                "to zoo; see the source's own terms.\n\n"
            )
    elif source.text is not None:
        license_note = (
            f"`{src.name}`'s own model card states no license in its front matter; the "
            f"terms it states for its weights apply to these weights too: {whose}.\n\n"
        )
    else:
        license_note = (
            f"`{src.name}` was registered without a model card: its terms, wherever they "
            f"are stated, apply to these weights too: {whose}.\n\n"
        )
    unchanged = [n for n in carried if n not in fitted]
    carried_note = (
        f"From the source, unchanged (zoo never resizes a vocabulary): {', '.join(unchanged)}.\n\n"
        if unchanged
        else ""
    )
    if fitted:
        carried_note += (
            f"From the source, set to this model's hidden size: {', '.join(fitted)} "
            "(the sentence-transformers pooling width"
            + (", and the pipeline without its Dense module" if left_out else "")
            + ").\n\n"
        )
    if left_out:
        carried_note += (
            f"From the source, left out: {', '.join(left_out)} (a sentence-transformers "
            "Dense module, whose weights take a "
            f"{pipeline_width or plan.source_sizes.get('hidden')}-wide embedding; the "
            "pipeline goes from pooling to the modules after it).\n\n"
        )
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n"
        f"# {name}\n\n"
        f"{what}"
        f"{license_note}{carried_note}"
        "## Lineage\n\n"
        f"- source: `{src.name}` ({src.content_hash})\n{lg}"
        f"- this checkpoint: {content_hash}\n\n"
        "Audit it with `zoo audit PATH`; re-derive it with `zoo rederive NAME`.\n"
    )
