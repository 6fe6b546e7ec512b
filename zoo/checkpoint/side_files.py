"""The files around a checkpoint's weights: tokenizer, generation and processor configs,
chat template, model card, license files, the code a config's ``auto_map`` names and a
sentence-transformers pipeline.

A model is usable only with them: ``AutoTokenizer`` and ``pipeline()`` read the tokenizer
files, ``generate`` reads generation_config.json, ``from_pretrained(...,
trust_remote_code=True)`` imports the modules ``auto_map`` names, ``SentenceTransformer``
reads modules.json and its modules' folders (``1_Pooling/config.json``), and a license
such as Llama's requires its LICENSE and USE_POLICY.md to travel with the weights. zoo
stores them at import like tensors (content-addressed by the sha256 of their bytes) and
writes them into every folder it materializes from the checkpoint (a vocabulary never
changes size in zoo, so the tokenizer is the source's as is). The model card is stored
too: its front matter carries the license a derived card inherits and the
``base_model`` that lineage records.

Taken, each up to :data:`MAX_SIDE_FILE_BYTES`: the files named in :data:`SIDE_FILES` (and
``*.tiktoken``) at the top of the folder, license files at its top (:func:`is_license`),
the top-level modules an ``auto_map`` names with the modules they import relatively
(:func:`code_modules`), and the files of the module folders modules.json names. What else
the folder holds, and a file of those kinds zoo cannot use (not a regular file, too large),
is :func:`scan`'s ``left``: an import says so. Only regular files whose names are UTF-8
text are read (zoo records the name), never a FIFO or a device, and without blocking.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from zoo.checkpoint.files import open_regular
from zoo.errors import InvalidCheckpointError, ZooError
from zoo.text import is_utf8

__all__ = [
    "MAX_SIDE_FILE_BYTES",
    "SIDE_FILES",
    "LeftBehind",
    "Scan",
    "SideFile",
    "base_models",
    "card_metadata",
    "code_modules",
    "find_side_files",
    "is_license",
    "is_side_file",
    "left_behind",
    "missing_code",
    "module_folders",
    "scan",
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
    "tiktoken.model": "tokenizer",  # tiktoken under transformers' older name (kimi)
    # The vocabularies other tokenizers read, many with no tokenizer.json beside them: a
    # folder without them loads a tokenizer that maps text to other ids, or none at all.
    "spm.model": "tokenizer",  # sentencepiece (deberta-v2, deberta-v3)
    "sentencepiece.model": "tokenizer",  # sentencepiece (rembert)
    "spm_char.model": "tokenizer",  # sentencepiece (speecht5)
    "source.spm": "tokenizer",  # sentencepiece (marian)
    "target.spm": "tokenizer",
    "target_vocab.json": "tokenizer",
    "bpe.codes": "tokenizer",  # fastBPE merges (phobert, bertweet)
    "dict.txt": "tokenizer",  # bartpho
    "vocab-src.json": "tokenizer",  # fsmt
    "vocab-tgt.json": "tokenizer",
    "entity_vocab.json": "tokenizer",  # luke
    "normalizer.json": "tokenizer",  # whisper's English spelling normalizer
    "emoji.json": "tokenizer",  # gpt-neox-japanese
    "byte_maps.json": "tokenizer",  # myt5
    "prophetnet.tokenizer": "tokenizer",
    "word_shape.json": "tokenizer",  # roc_bert
    "word_pronunciation.json": "tokenizer",
    "generation_config.json": "generation",
    "preprocessor_config.json": "processor",  # image processors, feature extractors
    "processor_config.json": "processor",
    "video_preprocessor_config.json": "processor",
    "audio_tokenizer_config.json": "processor",
    "chat_template.jinja": "chat_template",
    "chat_template.json": "chat_template",
    "README.md": "card",
    # sentence-transformers: the pipeline (modules.json) and its settings
    "modules.json": "sentence_transformers",
    "config_sentence_transformers.json": "sentence_transformers",
    "sentence_bert_config.json": "sentence_transformers",
}
_SUFFIXES = {".tiktoken": "tokenizer"}
# sentence_roberta_config.json, sentence_xlnet_config.json...: older pipelines' settings
_SENTENCE_CONFIG = re.compile(r"sentence_[\w-]+_config\.json")
# LICENSE, LICENSE.txt, LICENSE-MIT, LICENCE.md, COPYING, NOTICE, USE_POLICY.md...
_LICENSE = re.compile(r"(?i)(licen[cs]e|copying|notice|use[_-]policy)([._-][\w.-]*)?")
#: The roles of a license file, of the code an ``auto_map`` names, of a file of a
#: sentence-transformers pipeline.
LICENSE, CODE, SENTENCE_TRANSFORMERS = "license", "code", "sentence_transformers"
#: Where transformers saves a tokenizer's named chat templates (``tool_use``, ``rag``), one
#: ``NAME.jinja`` each beside chat_template.jinja, and looks for them on load (not below).
CHAT_TEMPLATES = "additional_chat_templates"

#: Larger files are left out: the largest tokenizer.json of a released model is a few
#: tens of MB (Gemma 3's: 33 MB); anything beyond this is not a side file.
MAX_SIDE_FILE_BYTES = 64 << 20
# The longest file name (with its folder) the registry records.
_MAX_NAME = 256


@dataclass(frozen=True)
class SideFile:
    """One side file read from a checkpoint folder; ``name`` is its path in the folder
    (``1_Pooling/config.json`` for a file of a sentence-transformers module)."""

    name: str
    role: str
    data: bytes
    digest: str  # sha256 of ``data``

    @property
    def nbytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class LeftBehind:
    """What a checkpoint folder holds that zoo does not keep, and ``why`` when it is of a
    kind zoo keeps (a tokenizer.json that is a FIFO, a card over the size limit); a folder's
    name ends in ``/``."""

    name: str
    why: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.why})" if self.why else self.name

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "why": self.why}


@dataclass(frozen=True)
class Scan:
    """The side files of a folder and what it holds besides, unkept."""

    found: list[SideFile]
    left: list[LeftBehind]


def is_license(name: str) -> bool:
    """Whether a file of this name at the top of a folder is a license file (LICENSE,
    LICENSE.txt, NOTICE, USE_POLICY.md and the like), kept so that the terms travel with
    the weights."""
    return _LICENSE.fullmatch(name) is not None


def is_side_file(name: str) -> bool:
    """Whether a file of this name at the top of a checkpoint folder is a side file
    whatever the folder holds (code is one only where an ``auto_map`` names it:
    :func:`code_modules`)."""
    return (
        name in SIDE_FILES
        or Path(name).suffix in _SUFFIXES
        or _SENTENCE_CONFIG.fullmatch(name) is not None
        or is_license(name)
    )


def _role(name: str) -> str | None:
    if name in SIDE_FILES:
        return SIDE_FILES[name]
    if Path(name).suffix in _SUFFIXES:
        return _SUFFIXES[Path(name).suffix]
    if _SENTENCE_CONFIG.fullmatch(name):
        return SENTENCE_TRANSFORMERS
    return LICENSE if is_license(name) else None


def _json_file(path: Path) -> Any:
    try:
        if path.is_file() and path.stat().st_size <= MAX_SIDE_FILE_BYTES:
            return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return None


# The configs whose auto_map names code: the model's, the tokenizer's, the processors'.
_AUTO_MAP_CONFIGS = (
    "config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
)
_MODULE = re.compile(r"[A-Za-z_]\w*")
# How transformers finds the modules a module imports relatively
# (transformers.dynamic_module_utils.get_relative_imports).
_RELATIVE_IMPORT = re.compile(r"^\s*(?:import\s+\.|from\s+\.)(\w+)", re.MULTILINE)


def auto_map_modules(config: Any) -> list[str]:
    """The modules of this repository that a config's ``auto_map`` names
    (``"AutoModel": "modeling_x.XModel"``, a tokenizer's ``[slow, fast]`` pair), not those
    of another repository (``"org/repo--modeling_x.XModel"``).

    Example:
        >>> auto_map_modules({"auto_map": {"AutoConfig": "configuration_x.XConfig",
        ...     "AutoTokenizer": ["tokenization_x.XTok", None], "AutoModel": "o/r--m.M"}})
        ['configuration_x', 'tokenization_x']
    """
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict):
        return []
    refs = []
    for value in auto_map.values():
        refs += value if isinstance(value, list) else [value]
    modules = []
    for ref in refs:
        if isinstance(ref, str) and "--" not in ref and "." in ref:
            module = ref.rsplit(".", 1)[0]
            if _MODULE.fullmatch(module):
                modules.append(module)
    return list(dict.fromkeys(modules))


def code_modules(root: Path) -> list[str]:
    """The top-level ``*.py`` files of the folder ``root`` that transformers imports to
    load it with ``trust_remote_code``: those an ``auto_map`` of its configs names, and
    the modules they import relatively, transitively; only files that exist."""
    todo = [m for name in _AUTO_MAP_CONFIGS for m in auto_map_modules(_json_file(root / name))]
    seen: list[str] = []
    while todo:
        module = todo.pop(0)
        path = root / f"{module}.py"
        if module in seen or not path.is_file():
            continue
        seen.append(module)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        todo += _RELATIVE_IMPORT.findall(text)
    return sorted(f"{m}.py" for m in seen)


def missing_code(config: Any, names) -> list[str]:
    """The files a config's ``auto_map`` names that are not among ``names``: a folder
    written with them would not load with ``trust_remote_code``."""
    return [f"{m}.py" for m in auto_map_modules(config) if f"{m}.py" not in set(names)]


def _module_folders(root: Path) -> list[str]:
    """The folders of the sentence-transformers modules that the modules.json of the
    folder ``root`` names (``1_Pooling``), inside it."""
    return module_folders(_json_file(root / "modules.json"))


def module_folders(modules: Any) -> list[str]:
    """The module folders a modules.json (parsed, or its bytes) names, each a relative
    path inside the checkpoint's folder; ``""`` (the transformer at its top) and any path
    leaving it are not."""
    if isinstance(modules, bytes):
        try:
            modules = json.loads(modules)
        except ValueError:
            return []
    folders = []
    for module in modules if isinstance(modules, list) else []:
        folder = module.get("path") if isinstance(module, dict) else None
        if not isinstance(folder, str) or not folder.strip("/"):
            continue  # "": the transformer at the top of the folder
        parts = Path(folder).parts
        if Path(folder).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts):
            continue
        folders.append(Path(*parts).as_posix())
    return list(dict.fromkeys(folders))


def _unusable(path: Path) -> str | None:
    """Why the file at ``path`` cannot be kept as a side file; None when it can."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a loop of symbolic links"
        return f"unreadable: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not a file"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO, not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > MAX_SIDE_FILE_BYTES:
        limit = MAX_SIDE_FILE_BYTES
        most = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
        return f"{st.st_size} bytes, over the {most} a side file may hold"
    return None


def _check_link(path: Path) -> None:
    try:
        os.stat(path)
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return  # a loop of links: not kept, and said so (_unusable)
    if path.is_symlink() and not path.exists():  # an HF cache blob gone: a torn copy
        raise InvalidCheckpointError(
            f"{path} is a symbolic link to {path.readlink()}, which does not exist; "
            "the folder is incomplete (download it again)."
        )


def _read(path: Path, name: str, role: str) -> SideFile | LeftBehind:
    _check_link(path)
    why = _unusable(path)
    if why is None and len(name) > _MAX_NAME:
        why = f"a name longer than {_MAX_NAME} characters"
    if why is not None:
        return LeftBehind(name, why)
    try:
        with open_regular(path) as f:  # never blocks, should a FIFO take its place now
            data = f.read(MAX_SIDE_FILE_BYTES + 1)
    except (OSError, ZooError) as exc:
        return LeftBehind(name, f"unreadable: {getattr(exc, 'strerror', None) or exc}")
    if len(data) > MAX_SIDE_FILE_BYTES:  # grown since it was looked at
        return LeftBehind(name, f"over the {MAX_SIDE_FILE_BYTES} bytes a side file may hold")
    return SideFile(name, role, data, hashlib.sha256(data).hexdigest())


#: Weights in other formats and training state beside the safetensors zoo reads: listed as
#: not kept, since an export holds the weights as safetensors (transformers loads those).
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")
# Which of those are a model's weights (pytorch_model.bin, model.onnx) rather than training
# state beside them (training_args.bin, optimizer.pt).
_WEIGHT_STEMS = ("pytorch_model", "model", "tf_model", "flax_model", "consolidated")
_WEIGHTS_ONLY = (".h5", ".msgpack", ".onnx", ".gguf")


def scan(root: Path, weights: Iterable[str] | None = None) -> Scan:
    """The side files of the folder ``root`` (by name; a module folder's files after the
    top's), and what it holds that zoo does not keep: any other file or folder at its
    top (weights in another format, or safetensors the import does not read, with why),
    and any file of a kind zoo keeps that it cannot use, with why. Hidden names,
    config.json, the weights read (``weights``, relative names; default those an import
    of the folder reads) and the indexes are not listed.

    Raises:
        InvalidCheckpointError: a side file is a symbolic link to nothing (an HF cache
            snapshot whose blob is gone): importing the rest would drop it.
    """
    if not root.is_dir():
        return Scan([], [])
    from zoo.checkpoint.hf import weight_files_read

    read = set(weight_files_read(root) if weights is None else weights)
    # A folder holding shards the index names (sub/model-00001-of-00002.safetensors).
    read_folders = {PurePosixPath(w).parts[0] for w in read if len(PurePosixPath(w).parts) > 1}
    code = set(code_modules(root))
    modules = _module_folders(root)
    found: list[SideFile] = []
    left: list[LeftBehind] = []
    for path in sorted(root.iterdir()):
        name = path.name
        if not is_utf8(name):  # zoo records a side file's name, so keeps none that is not
            escaped = os.fsencode(name).decode("ascii", "backslashreplace")
            left.append(LeftBehind(escaped, "a name that is not UTF-8 text"))
            continue
        role = _role(name) or (CODE if name in code else None)
        if role is not None:
            got = _read(path, name, role)
            (found if isinstance(got, SideFile) else left).append(got)
        elif name in modules or name in read or name in read_folders:
            continue  # modules read below; weights read by the import
        elif name == CHAT_TEMPLATES and path.is_dir() and not path.is_symlink():
            for template in sorted(path.iterdir()):
                rel = f"{name}/{template.name}"
                if template.name.endswith(".jinja") and is_utf8(template.name):
                    got = _read(template, rel, "chat_template")
                    (found if isinstance(got, SideFile) else left).append(got)
                elif not template.name.startswith("."):  # transformers reads none of it
                    escaped = os.fsencode(rel).decode("ascii", "backslashreplace")
                    left.append(LeftBehind(f"{escaped}/" if template.is_dir() else escaped))
        elif name.endswith(_OTHER_WEIGHTS) and not name.startswith(".") and not path.is_dir():
            weights = name.startswith(_WEIGHT_STEMS) or name.endswith(_WEIGHTS_ONLY)
            why = "weights in another format; an export holds safetensors" if weights else None
            left.append(LeftBehind(name, why))  # training state (optimizer.pt) as any file
        elif name.endswith(".safetensors") and not name.startswith(".") and read:
            # A shard its index does not name (left from an older save), or shards beside a
            # model.safetensors, which an import (as transformers) reads instead.
            left.append(LeftBehind(name, "safetensors weights the checkpoint does not read"))
        elif not (
            name.startswith(".")
            or name == "config.json"
            or name.endswith((".safetensors", ".index.json"))
        ):
            left.append(LeftBehind(f"{name}/" if path.is_dir() else name))
    for folder in modules:
        base = root / folder
        if not base.is_dir() or base.is_symlink():
            continue
        for path in sorted(p for p in base.rglob("*") if not p.is_dir()):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts):
                continue
            got = _read(path, rel.as_posix(), SENTENCE_TRANSFORMERS)
            (found if isinstance(got, SideFile) else left).append(got)
    return Scan(found, left)


def find_side_files(root: Path) -> list[SideFile]:
    """The side files of the folder ``root`` (see :func:`scan`)."""
    return scan(root).found


def left_behind(root: Path) -> list[str]:
    """What the checkpoint folder ``root`` holds that zoo neither reads nor stores, so an
    export lacks it, each with why when it is of a kind zoo keeps (see :func:`scan`)."""
    return [str(entry) for entry in scan(root).left]


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
