"""The benchmark's corpora, on every machine without downloads, and its batches.

Two corpora, both read from the Python installation that runs the benchmark:

- **bytes** (:func:`load_corpus`), for the small sources the benchmark trains itself: the
  Python standard library's source as bytes.
- **English text** (:func:`load_text_corpus`), for real checkpoints, in the source's own
  tokenizer: the prose documentation that ships with Python, i.e. the language
  reference's topics (``pydoc_data.topics``, what ``help("if")`` prints) and every
  docstring of at least 200 characters in the standard library (tests and IDLE left out).
  About 1.7 MB of technical English; a folder of ``*.txt`` files can replace it.

Batches (:func:`train_batch`) depend only on the data seed and the step, so every method
sees the same ones, on any device.

Bytes: every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` (``site-packages`` and
``dist-packages`` left out, so installed packages do not change the corpus), sorted by
relative path and concatenated with a separator token. Every 20th file goes to the
validation split (5% held out). Tokens are bytes (0-255) plus specials.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo.errors import InvalidInputError

SEP = 256  # file separator (also BOS/EOS)
MASK = 257  # masked-LM mask token
PAD = 258
VOCAB = 260  # 256 bytes + specials, rounded to a multiple of 4
HOLDOUT_EVERY = 20  # every 20th file is validation: 5% held out


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # token ids (int16 for bytes, int32 for a tokenizer's)
    valid: torch.Tensor
    digest: str  # sha256 of the file list and sizes (text: of the texts and the vocab)
    n_files: int
    root: str
    vocab: int = VOCAB
    mask_id: int = MASK
    # Masking replaces with a random id in [low, high); ids in ``specials`` are never
    # picked (bytes: none, so every position may be, as this corpus always did).
    random_ids: tuple[int, int] = (0, 256)
    specials: tuple[int, ...] = ()
    name: str = "python stdlib *.py (no site-packages), bytes + specials"


def _files(root: Path) -> list[Path]:
    skip = {"site-packages", "dist-packages", "__pycache__"}
    files = [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_corpus(max_bytes: int | None = 32_000_000, root: str | None = None) -> Corpus:
    """The stdlib corpus, deterministic for a given Python installation.

    ``max_bytes`` caps the total (files are taken in sorted order until the cap).
    """
    base = Path(root or sysconfig.get_paths()["stdlib"])
    h = hashlib.sha256()
    parts: dict[str, list[bytes]] = {"train": [], "valid": []}
    total = 0
    n = 0
    for i, path in enumerate(_files(base)):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if max_bytes is not None and total + len(data) > max_bytes:
            break
        total += len(data)
        n += 1
        h.update(path.relative_to(base).as_posix().encode() + b"\0" + str(len(data)).encode())
        parts["valid" if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else "train"].append(data)

    def tokens(chunks: list[bytes]) -> torch.Tensor:
        out = []
        for c in chunks:
            out.append(torch.tensor([SEP], dtype=torch.int16))
            if c:
                out.append(torch.frombuffer(bytearray(c), dtype=torch.uint8).to(torch.int16))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int16)

    if not parts["valid"] or not parts["train"]:
        raise InvalidInputError(
            f"max_bytes={max_bytes} leaves no train or validation file; raise it"
        )
    return Corpus(tokens(parts["train"]), tokens(parts["valid"]), h.hexdigest()[:16], n, str(base))


def windows(tokens: torch.Tensor, starts: torch.Tensor, seq: int) -> torch.Tensor:
    idx = starts[:, None] + torch.arange(seq)[None, :]
    return tokens[idx].long()


def train_batch(corpus: Corpus, step: int, *, seed: int, batch: int, seq: int) -> torch.Tensor:
    """Batch ``step`` of data stream ``seed``: the same for every method."""
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + step)
    starts = torch.randint(0, len(corpus.train) - seq, (batch,), generator=g)
    return windows(corpus.train, starts, seq)


def valid_set(corpus: Corpus, *, n: int, seq: int) -> torch.Tensor:
    """``n`` fixed, evenly spaced validation windows."""
    starts = torch.linspace(0, len(corpus.valid) - seq - 1, n).long()
    return windows(corpus.valid, starts, seq)


def mask_tokens(x: torch.Tensor, *, seed: int, rate: float = 0.15, corpus: Corpus | None = None):
    """BERT masking with a fixed generator per batch: 15% of positions are predicted;
    of those 80% become the mask token, 10% a random token, 10% stay. Returns (inputs,
    labels). ``corpus`` names the mask and random ids (default: the byte corpus's)."""
    mask_id, (low, high), specials = MASK, (0, 256), ()
    if corpus is not None:
        mask_id, (low, high), specials = corpus.mask_id, corpus.random_ids, corpus.specials
    g = torch.Generator().manual_seed(seed)
    pick = torch.rand(x.shape, generator=g) < rate
    how = torch.rand(x.shape, generator=g)
    rand = torch.randint(low, high, x.shape, generator=g)
    if specials:
        pick &= ~torch.isin(x, torch.tensor(specials, dtype=x.dtype))
    inputs = x.clone()
    inputs[pick & (how < 0.8)] = mask_id
    swap = pick & (how >= 0.8) & (how < 0.9)
    inputs[swap] = rand[swap]
    labels = torch.where(pick, x, torch.full_like(x, -100))
    return inputs, labels


# --- English text, in a source's own tokenizer ----------------------------------------

#: Docstrings shorter than this are mostly one-line summaries, not prose.
MIN_DOCSTRING = 200
_SKIP_DOCS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib"}


def python_docs(root: str | None = None) -> list[tuple[str, str]]:
    """(name, text) of every document of the English corpus, in a fixed order: the
    language reference's topics, then the standard library's docstrings by module path."""
    import ast
    import warnings
    from pydoc_data.topics import topics

    docs = [(f"topic:{k}", topics[k]) for k in sorted(topics)]
    base = Path(root or sysconfig.get_paths()["stdlib"])
    for path in _files(base):
        rel = path.relative_to(base)
        if _SKIP_DOCS & set(rel.parts):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes in old modules
                tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        for node in ast.walk(tree):
            if isinstance(node, nodes):
                text = ast.get_docstring(node)
                if text and len(text) >= MIN_DOCSTRING:
                    docs.append((f"{rel.as_posix()}:{getattr(node, 'name', '')}", text))
    return docs


def text_documents(folder: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """The English documents and where they came from: Python's own documentation, or
    every ``*.txt`` under ``folder`` (sorted by path)."""
    if folder is None:
        return python_docs(), "python documentation: pydoc topics + stdlib docstrings"
    base = Path(folder)
    files = sorted(base.rglob("*.txt"), key=lambda p: p.relative_to(base).as_posix())
    docs = [(p.relative_to(base).as_posix(), p.read_text(errors="replace")) for p in files]
    if not docs:
        raise InvalidInputError(f"{folder} has no *.txt file")
    return docs, f"*.txt under {base}"


def load_text_corpus(tokenizer, *, folder: str | None = None, max_tokens: int | None = None):
    """The English corpus in ``tokenizer``'s ids: each document tokenized without special
    tokens, documents joined by the tokenizer's separator (SEP for BERT, EOS for GPT-2),
    every 20th document held out for validation. Masking uses the tokenizer's mask token
    (none: a causal LM does not mask) and never picks its special tokens."""
    docs, origin = text_documents(folder)
    sep = tokenizer.sep_token_id
    if sep is None:
        sep = tokenizer.eos_token_id
    if sep is None:
        raise InvalidInputError("the tokenizer has neither a separator nor an end-of-text token")
    h = hashlib.sha256()
    vocab = tokenizer.get_vocab()
    h.update(repr(sorted(vocab.items())).encode())
    ids: dict[str, list[int]] = {"train": [], "valid": []}
    # Documents are cut into windows later: their length may exceed the model's.
    limit, tokenizer.model_max_length = tokenizer.model_max_length, 1 << 40
    try:
        encoded = tokenizer([t for _, t in docs], add_special_tokens=False)["input_ids"]
    finally:
        tokenizer.model_max_length = limit
    total = 0
    for i, ((name, text), tokens) in enumerate(zip(docs, encoded, strict=True)):
        if max_tokens is not None and total + len(tokens) > max_tokens:
            break
        total += len(tokens) + 1
        h.update(name.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
        split = "valid" if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else "train"
        ids[split] += [sep, *tokens]
    if not ids["valid"] or not ids["train"]:
        raise InvalidInputError("the text corpus leaves no train or validation document")
    specials = tuple(sorted(set(tokenizer.all_special_ids)))
    mask = tokenizer.mask_token_id
    size = max(len(tokenizer), max(vocab.values()) + 1)
    # Random replacements come from the longest run of ids without a special token in it
    # (BERT: after [MASK]; GPT-2: before <|endoftext|>).
    runs = [(0, min(specials, default=size)), (max(specials, default=-1) + 1, size)]
    low, high = max(runs, key=lambda r: r[1] - r[0])
    return Corpus(
        torch.tensor(ids["train"], dtype=torch.int32),
        torch.tensor(ids["valid"], dtype=torch.int32),
        h.hexdigest()[:16],
        len(docs),
        origin,
        vocab=size,
        mask_id=-1 if mask is None else mask,
        random_ids=(low, high),
        specials=specials,
        name=f"{origin}; tokenizer {type(tokenizer).__name__} ({size} ids)",
    )
