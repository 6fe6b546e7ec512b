"""The source checkpoint: a registered one (a real checkpoint, with its tokenizer), or a
small one the benchmark trains on the byte corpus, caches and registers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .models import build_model, default_lr, source_config
from .training import train

#: Training a source until flat: rounds of this many steps, stopped when a round improves
#: the validation loss by less than this fraction, or after MAX_ROUNDS.
FLAT_ROUND = 500
FLAT_TOLERANCE = 0.01
MAX_ROUNDS = 20


def source_tokenizer(reg, info):
    """The tokenizer stored with a registered source (its files are kept at import), or
    None if it has none (sources trained here read bytes)."""
    import tempfile

    from zoo.api.side_files import files_of

    files = [f for f in files_of(reg, info) if f.role == "tokenizer"]
    if not files:
        return None
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    quiet = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with tempfile.TemporaryDirectory(prefix="zoo-tokenizer-") as folder:
            for f in files:  # each blob verified as it is read
                (Path(folder) / f.name).write_bytes(reg.store.get(f.digest))
            return AutoTokenizer.from_pretrained(folder)
    finally:
        hf_logging.set_verbosity(quiet)


def registered_source(
    reg, name: str, family: str | None, size
) -> tuple[str, tuple[int, int], int, Any]:
    """(family, (layers, hidden), head size, tokenizer or None) of the registered source
    ``name``, checked against what the caller asked for (None: take the source's)."""
    from zoo.errors import InvalidInputError
    from zoo.families import get_family

    from . import data as bdata
    from .models import FAMILIES, parse_size

    info = reg.show(name)
    if family is not None and info.family != family:
        raise InvalidInputError(f"{info.name} is a {info.family} checkpoint, not {family}.")
    if info.family not in FAMILIES:
        raise InvalidInputError(
            f"{info.name} is a {info.family} checkpoint; the benchmark runs {FAMILIES}."
        )
    sizes = get_family(info.family).axis_sizes(info.config)
    own = (sizes["layers"], sizes["hidden"])
    if size is not None and parse_size(size) != own:
        raise InvalidInputError(
            f"{info.name} is {own[0]}x{own[1]}, not {size}; leave out --source-size."
        )
    tokenizer = source_tokenizer(reg, info)
    if tokenizer is None and info.config.get("vocab_size") != bdata.VOCAB:
        raise InvalidInputError(
            f"{info.name} has no tokenizer stored with it; the benchmark reads text in the "
            "source's own tokenizer (import the folder with its tokenizer files)."
        )
    heads = info.config.get("num_attention_heads") or info.config.get("n_head") or 1
    head_dim = info.config.get("head_dim") or own[1] // heads
    return info.family, own, head_dim, tokenizer


def obtain_source(
    reg,
    family: str,
    size: tuple[int, int],
    *,
    corpus,
    source: str | None,
    steps: int,
    batch: int,
    seq: int,
    val: torch.Tensor,
    eval_every: int,
    cache_dir: Path,
    bar=None,
) -> dict[str, Any]:
    """A registered source by name, or one trained here (cached, then registered): for
    ``steps`` steps, or with ``steps=0`` until its validation loss has flattened (rounds of
    :data:`FLAT_ROUND` steps until one improves it by less than :data:`FLAT_TOLERANCE`)."""
    if source is not None:
        info = reg.show(source)
        return {"name": info.name, "trained_here": False, "config": info.config}
    layers, hidden = size
    budget = f"s{steps}" if steps else "flat"
    folder = cache_dir / f"{family}-{layers}x{hidden}-{budget}-b{batch}-q{seq}-{corpus.digest}"
    meta_path = folder / "bench_source.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if bar is not None:
            bar.update(steps)
    else:
        model = build_model(family, source_config(family, layers, hidden, seq))
        torch.manual_seed(0)
        model.apply(model._init_weights)
        rounds = []
        for i in range(1 if steps else MAX_ROUNDS):
            # Until flat: rounds of warmup + cosine (warm restarts), each on new batches,
            # until a round improves validation loss by less than FLAT_TOLERANCE.
            run = train(
                model,
                family,
                corpus,
                steps=steps or FLAT_ROUND,
                seed=10_000 + i,
                batch=batch,
                seq=seq,
                lr=default_lr(hidden),
                val=val,
                eval_every=eval_every,
                bar=bar,
            )
            rounds.append(run)
            if (
                len(rounds) > 1
                and rounds[-2]["loss"][-1] - run["loss"][-1]
                < FLAT_TOLERANCE * (rounds[-2]["loss"][-1])
            ):
                break
        folder.mkdir(parents=True, exist_ok=True)
        _save_quietly(model, folder)
        done = sum(r["steps"][-1] for r in rounds)
        meta = {
            "steps": done,
            "until_flat": not steps,
            "rounds": len(rounds),
            "batch": batch,
            "seq": seq,
            "lr": default_lr(hidden),
            "final_val_loss": rounds[-1]["loss"][-1],
            "curve_steps": [
                sum(r["steps"][-1] for r in rounds[:i]) + x
                for i, r in enumerate(rounds)
                for x in r["steps"]
            ],
            "curve": [x for r in rounds for x in r["loss"]],
            "wall_s": sum(r["wall_s"] for r in rounds),
            "data_seed": 10_000,
        }
        meta_path.write_text(json.dumps(meta, indent=1))
    name = f"bench-{family}-{layers}x{hidden}-{corpus.digest[:8]}-{budget}"
    info = reg.import_checkpoint(str(folder), name=name)
    return {
        "name": info.name,
        "trained_here": True,
        "config": info.config,
        "content_hash": info.content_hash,
        **meta,
    }


def _save_quietly(model, folder: Path) -> None:
    """save_pretrained without transformers' own shard bar, which would cut through the
    benchmark's bar (and print before any error that follows)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
