"""One run of the transfer benchmark (:func:`run_transfer`): source, corpus, every
method's initialization and training, statistics, report."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.errors import DeviceUnavailableError, InvalidInputError

from . import data as bdata
from .initializations import initialize, zoo_default_method
from .methods import default_methods, parse_method
from .models import (
    CAUSAL,
    FAMILIES,
    HEAD_DIM,
    build_model,
    default_lr,
    load_state,
    parse_size,
)
from .report import machine, plot, write_report
from .sources import obtain_source, registered_source
from .statistics import STEPS_RULE, add_targets, summarize
from .training import flops_per_step, train

DEFAULT_SOURCE_SIZE = "4x128"


def default_target(src_size: tuple[int, int], direction: str, head_dim: int) -> tuple[int, int]:
    """Half the source on both axes (l2s) or double (s2l), at least one layer and a width
    that is a whole number of the source's heads: zoo keeps head_dim by default, so a
    width between head sizes is a size it refuses."""
    f = 0.5 if direction == "l2s" else 2
    hidden = int(src_size[1] * f) // head_dim * head_dim
    return max(1, int(src_size[0] * f)), max(head_dim, hidden)


def run_transfer(
    family: str | None,
    direction: str,
    source_size: str | Sequence[int] | None = None,
    target_size: str | Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    seeds: int | Sequence[int] = 3,
    steps: int = 400,
    *,
    source: str | None = None,
    home: str | os.PathLike[str] | None = None,
    source_steps: int = 600,
    source_batch: int | None = None,
    batch: int = 16,
    seq: int = 64,
    lr: float | None = None,
    eval_every: int = 10,
    warmup: float = 0.1,
    val_windows: int = 64,
    dct_keep: float | None = None,
    max_bytes: int | None = 32_000_000,
    cache_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    target_method: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    tag: str | None = None,
    device: str = "cpu",
    text_dir: str | os.PathLike[str] | None = None,
    with_scratch: bool = True,
) -> dict[str, Any]:
    """Run the transfer benchmark; returns the report (also written as JSON + PNG).

    Args:
        family: ``gpt2`` or ``llama`` (causal LM), or ``bert`` (masked LM); None: the
            registered source's, or ``gpt2``.
        direction: ``l2s`` (target smaller) or ``s2l`` (target larger).
        source_size, target_size: ``"LAYERSxHIDDEN"``; the source's defaults to 4x128 for
            a source trained here and is the registered source's own otherwise; the
            target's to half (l2s) or double (s2l) the source on both axes, in whole heads.
        methods: method names (module doc); default :func:`default_methods`.
        seeds: a count (seeds 0..n-1) or explicit seeds; each seed fixes the data order,
            the mask draws and the random inits, and is shared by every method.
        steps: training steps per run (every method, every seed).
        source: a registered source in ``home`` to use instead of training one. A real
            checkpoint reads English text (:func:`.data.load_text_corpus`) in its own
            tokenizer (:func:`.sources.source_tokenizer`); one without a tokenizer, trained
            here on bytes, reads the byte corpus.
        home: ZOO_HOME of the registry (default: the default registry with ``source``, a
            fresh temporary one without).
        source_steps: training budget of a source trained here; 0: until its validation
            loss has flattened (:func:`.sources.obtain_source`).
        source_batch: its batch size (default ``batch``).
        batch, seq: tokens per step are ``batch * seq``.
        lr: peak AdamW learning rate of the target (default :func:`default_lr`).
        eval_every: validation every this many steps (steps-to-reach resolution).
        warmup: the targets' linear warmup, a fraction of ``steps`` (at least 10 steps).
        val_windows: validation windows (fixed, held-out files).
        dct_keep: FRONT keep ratio (default: target/source ratio, capped at 1).
        cache_dir: where trained sources are kept for reuse (default under ``home``).
        out_dir: write ``transfer-<family>-<direction>.json`` and ``.png`` there.
        target_method: the method the targets are checked for (default: zoo's default).
        progress: a tqdm bar on stderr.
        threads: torch threads (default: leave as is).
        tag: appended to the output file names (``transfer-gpt2-l2s-TAG.json``).
        device: where the targets train, ``cpu`` or ``cuda`` (bf16 autocast; the same
            batches and masks as on the CPU). Initializations are made on the CPU.
        text_dir: a folder of ``*.txt`` files to read instead of Python's documentation,
            for a ``source`` with a tokenizer (refused otherwise: a byte-level source reads
            the byte corpus).
        with_scratch: add scratch when ``methods`` leaves it out (off for runs that
            :func:`.statistics.merge_reports` joins to one that has it).
    """
    import zoo

    if threads:
        torch.set_num_threads(threads)
    if family is not None and family not in FAMILIES:
        raise InvalidInputError(f"Family {family!r} is not benchmarked; choose one of {FAMILIES}.")
    if direction not in ("l2s", "s2l"):
        raise InvalidInputError(f"Direction must be l2s or s2l, not {direction!r}.")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("--device cuda: no CUDA device is available.")
    for label, value in (("steps", steps), ("batch", batch)):
        if value < 1:
            raise InvalidInputError(f"{label} must be at least 1, not {value}.")
    if seq < 2:  # a causal model's loss needs a next token, a masked one a context
        raise InvalidInputError(f"seq must be at least 2 tokens, not {seq}.")
    if source_steps < 0:
        raise InvalidInputError(f"source_steps must be 0 (until flat) or more, not {source_steps}.")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise InvalidInputError("Give at least one seed.")
    specs = {s.name: s for s in map(parse_method, methods or default_methods(direction))}
    if "scratch" not in specs and with_scratch:
        specs = {"scratch": parse_method("scratch"), **specs}

    tmp = None
    if home is None and source is None:
        tmp = tempfile.TemporaryDirectory(prefix="zoo-bench-")
        home = tmp.name
    reg = zoo.connect(home=home)
    t_start = time.perf_counter()
    bar = None
    try:
        tokenizer = None
        if source is not None:
            family, src_size, head_dim, tokenizer = registered_source(
                reg, source, family, source_size
            )
        else:
            family = family or "gpt2"
            src_size = parse_size(source_size or DEFAULT_SOURCE_SIZE)
            head_dim = src_size[1] // max(1, src_size[1] // HEAD_DIM)
        if target_size is None:
            target_size = default_target(src_size, direction, head_dim)
        tgt_size = parse_size(target_size)
        if min(*src_size, *tgt_size) < 1:
            raise InvalidInputError(f"Sizes must be positive: {src_size} -> {tgt_size}.")
        sizes = f"{src_size[0]}x{src_size[1]} -> {tgt_size[0]}x{tgt_size[1]}"
        if tgt_size == src_size:  # what a default half of a 1x32 source comes to
            raise InvalidInputError(f"{sizes} changes no size: give a {direction} --target-size.")
        grows = tgt_size[0] > src_size[0] or tgt_size[1] > src_size[1]
        if grows != (direction == "s2l"):
            raise InvalidInputError(f"{sizes} is not {direction}.")
        if tgt_size[1] % head_dim:  # zoo keeps head_dim; the benchmark sets no other heads
            raise InvalidInputError(
                f"{sizes}: the source's heads are {head_dim} wide and zoo keeps them, so the "
                f"target's width must be a multiple of {head_dim}."
            )
        if source is None:  # a size zoo refuses is refused before the source trains
            from zoo.families import get_family
            from zoo.families.base import TargetSize

            from .models import source_config

            get_family(family).target_config(
                source_config(family, *src_size, seq), TargetSize(*tgt_size)
            )
        if dct_keep is None:
            dct_keep = min(1.0, tgt_size[1] / src_size[1])
        lr = lr or default_lr(tgt_size[1])
        if target_method is None:
            target_method = zoo_default_method(family, src_size, tgt_size)

        cache = Path(cache_dir) if cache_dir is not None else Path(home) / "bench-sources"
        out_path = Path(out_dir) if out_dir is not None else None
        stem = f"transfer-{family}-{direction}" + (f"-{tag}" if tag else "")
        if tokenizer is not None:
            corpus = bdata.load_text_corpus(
                tokenizer, folder=None if text_dir is None else os.fspath(text_dir)
            )
        else:
            if text_dir is not None:  # taken silently, the run would measure other text
                raise InvalidInputError(
                    "--text is read in a registered source's own tokenizer; a source trained "
                    "here, or one registered without a tokenizer, reads the byte corpus: "
                    "give --source a checkpoint with a tokenizer, or leave --text out."
                )
            corpus = bdata.load_corpus(max_bytes=max_bytes)
        if min(len(corpus.train), len(corpus.valid)) <= seq:
            raise InvalidInputError(f"--seq {seq} is longer than the corpus's validation split.")
        val = bdata.valid_set(corpus, n=val_windows, seq=seq)
        report: dict[str, Any] = {
            "benchmark": "transfer",
            "family": family,
            "direction": direction,
            "source_size": list(src_size),
            "target_size": list(tgt_size),
            "steps": steps,
            "seeds": seed_list,
            "batch": batch,
            "seq": seq,
            "tokens_per_step": batch * seq,
            "lr": lr,
            "eval_every": eval_every,
            "val_windows": val_windows,
            "dct_keep": dct_keep,
            "schedule": f"AdamW(0.9,0.95, wd 0.01 on matrices), warmup {warmup:.0%} (at least "
            "10 steps) then cosine to 10%, grad clip 1.0",
            "warmup": warmup,
            "objective": "causal LM" if family in CAUSAL else "masked LM (15%, 80/10/10)",
            "data": {
                "corpus": corpus.name,
                "root": corpus.root,
                "files": corpus.n_files,
                "digest": corpus.digest,
                "train_tokens": len(corpus.train),
                "valid_tokens": len(corpus.valid),
                "vocab": corpus.vocab,
            },
            "device": device,
            "precision": "bf16 autocast" if torch.device(device).type == "cuda" else "fp32",
            "machine": machine(device),
            "target_method": target_method,
            "steps_rule": STEPS_RULE,
            "partial": True,
        }
        total = len(specs) * len(seed_list) * steps + (0 if source else source_steps)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=stem, unit="step", leave=False)
        src = obtain_source(
            reg,
            family,
            src_size,
            corpus=corpus,
            source=source,
            steps=source_steps,
            batch=source_batch or batch,
            seq=seq,
            val=val,
            eval_every=max(eval_every, 25),
            cache_dir=cache,
            bar=bar,
        )
        report["source"] = {k: v for k, v in src.items() if k != "config"}
        src_info = reg.show(src["name"])
        from zoo.api import tensors as tio

        source_state = (src_info.config, tio.load_tensors(reg.store, src_info.tensors))
        runs: dict[str, list[dict[str, Any]]] = {}
        flops = None
        for name, spec in specs.items():
            runs[name] = []
            for seed in seed_list:
                t0 = time.perf_counter()
                state, config, derived = initialize(
                    reg,
                    family,
                    src["name"],
                    spec,
                    tgt_size,
                    seed=seed,
                    dct_keep=dct_keep,
                    source_state=source_state,
                )
                # A head the source lacks: the model class's init, from the run's seed.
                model = build_model(family, config, seed=seed)
                report["head_initialized"] = load_state(model, family, state)
                t_init = time.perf_counter() - t0
                if flops is None:
                    flops = flops_per_step(model, family, batch, seq)
                    report["flops_per_step"] = flops
                    report["target_config"] = config
                run = train(
                    model,
                    family,
                    corpus,
                    steps=steps,
                    seed=seed,
                    batch=batch,
                    seq=seq,
                    lr=lr,
                    val=val,
                    eval_every=eval_every,
                    bar=bar,
                    warmup=warmup,
                    device=device,
                )
                run.update(seed=seed, materialize_s=t_init, derived=derived)
                runs[name].append(run)
                del model
            report["runs"] = runs
            report.update(summarize(runs, specs, steps, flops))
            report["wall_s"] = time.perf_counter() - t_start
            if out_path is not None:
                write_report(report, out_path, stem)
    finally:
        if bar is not None:
            bar.close()
        reg.close()
        if tmp is not None:
            tmp.cleanup()
    add_targets(report)
    report["partial"] = False
    report["wall_s"] = time.perf_counter() - t_start
    if out_path is not None:
        write_report(report, out_path, stem)
        plot(report, out_path / f"{stem}.png")
    return report
