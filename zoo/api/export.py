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
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write config.json, model.safetensors and README.md to ``out`` atomically, with
    ``extra_files`` (file name -> bytes: the source's tokenizer and configs) beside them."""
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
        for name, data in (extra_files or {}).items():
            if (temp / name).exists() or Path(name).name != name:
                raise InvalidInputError(f"{name!r} is not a side file zoo can write to --out.")
            (temp / name).write_bytes(data)
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
