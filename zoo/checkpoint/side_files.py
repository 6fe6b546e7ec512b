"""The files around a checkpoint's weights: tokenizer, generation and processor configs,
chat template and model card.

A model is usable only with them: ``AutoTokenizer`` and ``pipeline()`` read the tokenizer
files, ``generate`` reads generation_config.json. zoo stores them at import like tensors
(content-addressed by the sha256 of their bytes) and writes them into every folder it
materializes from the checkpoint (a vocabulary never changes size in zoo, so the
tokenizer is the source's as is). The model card is stored too: its front matter carries
the license a derived card inherits and the ``base_model`` that lineage records.

Only the files named in :data:`SIDE_FILES` (and ``*.tiktoken``) at the top of the folder
are taken, each up to :data:`MAX_SIDE_FILE_BYTES`: regular files whose names are UTF-8
text (zoo records the name), never a FIFO or a device.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.checkpoint.files import cannot_read, is_regular, not_a_file, open_regular, what_is
from zoo.text import is_utf8

__all__ = [
    "MAX_SIDE_FILE_BYTES",
    "SIDE_FILES",
    "SideFile",
    "base_models",
    "card_metadata",
    "find_side_files",
    "is_side_file",
    "left_behind",
]

#: file name -> role. Roles: what ``zoo show`` groups them by.
SIDE_FILES: dict[str, str] = {
    "tokenizer.json": "tokenizer",
    "tokenizer_config.json": "tokenizer",
    "special_tokens_map.json": "tokenizer",
    "added_tokens.json": "tokenizer",
    "vocab.txt": "tokenizer",  # WordPiece (bert)
    "vocab.json": "tokenizer",  # byte-level BPE (gpt2, roberta)
    "merges.txt": "tokenizer",
    "tokenizer.model": "tokenizer",  # sentencepiece (llama, gemma, mistral)
    "spiece.model": "tokenizer",  # sentencepiece (t5)
    "sentencepiece.bpe.model": "tokenizer",  # sentencepiece (xlm-roberta)
    "generation_config.json": "generation",
    "preprocessor_config.json": "processor",  # image processors, feature extractors
    "processor_config.json": "processor",
    "video_preprocessor_config.json": "processor",
    "chat_template.jinja": "chat_template",
    "chat_template.json": "chat_template",
    "README.md": "card",
}
_SUFFIXES = {".tiktoken": "tokenizer"}

#: Larger files are left out: the largest tokenizer.json of a released model is a few
#: tens of MB (Gemma 3's: 33 MB); anything beyond this is not a side file.
MAX_SIDE_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class SideFile:
    """One side file read from a checkpoint folder."""

    name: str
    role: str
    data: bytes
    digest: str  # sha256 of ``data``

    @property
    def nbytes(self) -> int:
        return len(self.data)


def is_side_file(name: str) -> bool:
    """Whether a file of this name at the top of a checkpoint folder is a side file."""
    return name in SIDE_FILES or Path(name).suffix in _SUFFIXES


def find_side_files(root: Path) -> list[SideFile]:
    """The side files at the top of the folder ``root``, by name."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        role = SIDE_FILES.get(path.name) or _SUFFIXES.get(path.suffix)
        if role is None or not is_utf8(path.name):  # not kept: left_behind lists it
            continue
        what = what_is(path)
        if what is not None and what.startswith("a symbolic link"):  # a torn HF cache copy
            raise not_a_file(path, what)
        if what is not None or path.stat().st_size > MAX_SIDE_FILE_BYTES:
            continue  # a folder, a FIFO, a device: never read
        with open_regular(path) as f:
            try:
                data = f.read(MAX_SIDE_FILE_BYTES + 1)
            except OSError as exc:
                raise cannot_read(path, exc) from exc
        if len(data) > MAX_SIDE_FILE_BYTES:
            continue
        found.append(SideFile(path.name, role, data, hashlib.sha256(data).hexdigest()))
    return found


#: Weights in other formats and training state beside the safetensors zoo reads: an export
#: holds the weights as safetensors, which transformers loads in their place.
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")


def left_behind(root: Path) -> list[str]:
    """What the checkpoint folder ``root`` holds that zoo neither reads nor stores, so an
    export lacks it: code a config's ``auto_map`` names (``trust_remote_code``), a
    sentence-transformers pipeline (``modules.json``, ``1_Pooling/``), any other file or
    folder at its top (a folder ends in ``/``), and any name that is not UTF-8 (shown
    with its bytes escaped, ``\\xff``). Hidden names, weights in other formats and their
    indexes are not listed."""
    found = []
    for path in sorted(root.iterdir()):
        name = path.name
        if not is_utf8(name):  # zoo records a side file's name, so keeps none that is not
            name = os.fsencode(name).decode("ascii", "backslashreplace")
        elif (
            name.startswith(".")
            or name == "config.json"
            or (is_side_file(name) and is_regular(path))  # a FIFO is not read, so not kept
            or name.endswith((".safetensors", ".index.json", *_OTHER_WEIGHTS))
        ):
            continue
        found.append(f"{name}/" if path.is_dir() else name)
    return found


def card_metadata(text: str) -> dict[str, Any]:
    """The YAML front matter of a model card (between ``---`` lines at its top); ``{}``
    when it has none or it does not parse: a README is documentation, not the checkpoint.

    Example:
        >>> card_metadata("---\\nlicense: mit\\nbase_model: org/base\\n---\\n# Hi")
        {'license': 'mit', 'base_model': 'org/base'}
    """
    import yaml

    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if end is None:
        return {}
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


# A Hub repository id: ORG/NAME, or a legacy NAME without an organization (gpt2).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(?:/[A-Za-z0-9][\w.-]{0,95})?")
# The relations the Hub's model tree knows (base_model_relation).
_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def base_models(meta: dict[str, Any]) -> tuple[list[str], str]:
    """The repository ids a card's ``base_model`` names, and their relation to the model:
    ``base_model_relation`` when the card states a known one, else ``merge`` for several
    bases and ``finetune`` for one (the Hub infers the same when the card is silent).

    Example:
        >>> base_models({"base_model": ["org/a", "org/b"]})
        (['org/a', 'org/b'], 'merge')
    """
    value = meta.get("base_model")
    values = value if isinstance(value, list) else [value]
    repos = list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))
    repos = [r for r in repos if _REPO_ID.fullmatch(r)]
    relation = meta.get("base_model_relation")
    if relation not in _RELATIONS:
        relation = "merge" if len(repos) > 1 else "finetune"
    return repos, relation
