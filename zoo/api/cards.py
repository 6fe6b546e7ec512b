"""The model card (README.md) of a folder zoo materializes.

Its front matter names the base model (the source's Hub repository, else its registry
name) and the source's license, which the weights inherit; its text says plainly that the
weights are an initialization derived from the source by a recipe, not a trained model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Front-matter keys a derived card takes from its source's card.
INHERITED = ("license", "license_name", "license_link")

#: The tags of the card zoo writes for a folder it derived; an import reads them to tell
#: that card from a model's own.
DERIVED_TAGS = ("zoo", "learngene")


def model_card(
    plan,
    name: str,
    content_hash: str,
    source_card: Mapping[str, Any] | None = None,
    carried: Sequence[str] = (),
) -> str:
    """The card of the derived checkpoint ``name`` (``content_hash``) that ``plan``
    derives; ``source_card`` is the front matter of the source's own card
    (zoo.api.side_files.card_metadata_of), ``carried`` the names of the source's files the
    folder holds besides weights, config and card."""
    import yaml

    from zoo import __version__

    src = plan.source
    base = next(
        (i.origin[len("hf://") :] for i in src.imports if i.origin.startswith("hf://")), src.name
    )
    meta: dict[str, Any] = {"base_model": base}
    source_card = source_card or {}
    meta |= {k: source_card[k] for k in INHERITED if source_card.get(k) not in (None, "")}
    meta |= {"library_name": "transformers", "tags": list(DERIVED_TAGS)}
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
    license_note = (
        f"License: `{meta['license']}`, inherited from `{src.name}`: the weights derive from "
        "its weights.\n\n"
        if "license" in meta
        else ""
    )
    carried_note = (
        f"From the source, unchanged (zoo never resizes a vocabulary): {', '.join(carried)}.\n\n"
        if carried
        else ""
    )
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n"
        f"# {name}\n\n"
        f"The weights are an initialization that zoo {__version__} derived from `{src.name}` "
        f"(base model `{base}`) with {how}, {rules}. This is an initialization, not a "
        "trained model: train it before use.\n\n"
        f"{license_note}{carried_note}"
        "## Lineage\n\n"
        f"- source: `{src.name}` ({src.content_hash})\n{lg}"
        f"- this checkpoint: {content_hash}\n\n"
        "Audit it with `zoo audit PATH`; re-derive it with `zoo rederive NAME`.\n"
    )
