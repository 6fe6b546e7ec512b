"""Writing a materialized model as a Hugging Face folder, all or nothing.

The folder is assembled under a hidden temporary name beside the destination and renamed
into place only when complete, so an interrupted run never leaves a partial folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ConflictError, InvalidInputError


def check_out(out: str | Path | None, *, force: bool) -> None:
    """Refuse ``force`` without an output folder, and a folder :func:`check_out_dir` refuses."""
    if out is None:
        if force:
            raise InvalidInputError("--force replaces a non-empty --out folder; give --out.")
        return
    check_out_dir(Path(out), force=force)


def check_out_dir(out: Path, *, force: bool) -> None:
    """Refuse an output folder that exists and is not empty, unless ``force``; and folders
    that cannot be swapped by a rename: a symbolic link (the link, not its target, would
    be replaced), the current folder or one above it."""
    if out.is_symlink():
        raise InvalidInputError(f"--out {out} is a symbolic link; give the folder it points to.")
    here = Path.cwd().resolve()
    if out.resolve() in (here, *here.parents):
        raise InvalidInputError(
            f"--out {out} is the current folder or one above it; zoo renames the finished "
            "folder into place, so give a folder below it."
        )
    if out.exists() and not out.is_dir():
        raise ConflictError(f"--out {out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConflictError(f"--out {out} exists and is not empty; pass --force to replace it.")


def write_hf_folder(
    out: Path,
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    force: bool,
    metadata: Mapping[str, str],
    card: str,
) -> Path:
    """Write config.json, model.safetensors and README.md to ``out`` atomically."""
    from zoo.checkpoint import write_safetensors

    check_out_dir(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.parent / f".{out.name}.zoo-tmp-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        (temp / "config.json").write_text(
            json.dumps(dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        write_safetensors(temp / "model.safetensors", state, dict(metadata))
        (temp / "README.md").write_text(card, encoding="utf-8")
        for f in temp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _swap_into_place(temp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(temp)
    return out


def _swap_into_place(temp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(temp, out)
        return
    old = out.parent / f".{out.name}.zoo-old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    try:
        os.replace(temp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def model_card(plan, info) -> str:
    """A model card whose front matter names the base model and zoo's recipe."""
    from zoo import __version__

    src = plan.source
    base = next(
        (i.origin[len("hf://") :] for i in src.imports if i.origin.startswith("hf://")), src.name
    )
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
    return (
        "---\n"
        f"base_model: {base}\n"
        "library_name: transformers\n"
        "tags:\n- zoo\n- learngene\n"
        "---\n\n"
        f"# {info.name}\n\n"
        f"Initialized by zoo {__version__} from `{src.name}` with {how}, "
        f"{rules}. This is an initialization, not a trained model.\n\n"
        "## Lineage\n\n"
        f"- source: `{src.name}` ({src.content_hash})\n{lg}"
        f"- this checkpoint: {info.content_hash}\n\n"
        "Audit it with `zoo audit PATH`; re-derive it with `zoo rederive NAME`.\n"
    )


def export_artifact(reg, query: str, out: str | Path, *, force: bool = False) -> Path:
    """Write a registered checkpoint as an HF folder; see :meth:`zoo.Registry.export`.

    A derived checkpoint is re-derived from its recipe and verified (that also writes its
    provenance into the file); a source is read from the store, every blob verified."""
    import json as _json

    from zoo.errors import InvalidInputError as _Invalid

    from . import tensors as tio

    check_out(out, force=force)
    info = reg.show(query)
    if info.kind == "derived":
        return reg.rederive(info.name, out=out, force=force).out
    if info.kind != "source":
        raise _Invalid(
            f"{info.name} is a {info.kind}, not a checkpoint; materialize a size from it."
        )
    state = tio.load_tensors(reg.store, info.tensors)
    card = (
        "---\nlibrary_name: transformers\ntags:\n- zoo\n---\n\n"
        f"# {info.name}\n\nA source checkpoint registered in zoo ({info.content_hash}).\n"
        "Audit a copy with `zoo audit PATH`.\n"
    )
    metadata = {
        "format": "pt",
        "zoo.source": _json.dumps({"name": info.name, "content_hash": info.content_hash}),
    }
    return write_hf_folder(
        Path(out), state, info.config or {}, force=force, metadata=metadata, card=card
    )
