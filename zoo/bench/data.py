"""A real text corpus on every machine without downloads: the Python standard library.

Every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` (``site-packages`` and
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

SEP = 256  # file separator (also BOS/EOS)
MASK = 257  # masked-LM mask token
PAD = 258
VOCAB = 260  # 256 bytes + specials, rounded to a multiple of 4
HOLDOUT_EVERY = 20  # every 20th file is validation: 5% held out


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # token ids, int16
    valid: torch.Tensor
    digest: str  # sha256 of the file list and sizes
    n_files: int
    root: str


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
        raise ValueError(f"max_bytes={max_bytes} leaves no train or validation file; raise it")
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


def mask_tokens(x: torch.Tensor, *, seed: int, rate: float = 0.15):
    """BERT masking with a fixed generator per batch: 15% of positions are predicted;
    of those 80% become MASK, 10% a random byte, 10% stay. Returns (inputs, labels)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.rand(x.shape, generator=g) < rate
    how = torch.rand(x.shape, generator=g)
    rand = torch.randint(0, 256, x.shape, generator=g)
    inputs = x.clone()
    inputs[pick & (how < 0.8)] = MASK
    swap = pick & (how >= 0.8) & (how < 0.9)
    inputs[swap] = rand[swap]
    labels = torch.where(pick, x, torch.full_like(x, -100))
    return inputs, labels
