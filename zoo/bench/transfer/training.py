"""Training and validation: the same loop, batches and masks for every method.

The loss is computed where it is needed: a masked LM applies its head only at the masked
positions (the other 85% of a vocabulary-wide projection would be thrown away), a causal LM
at every position. On CUDA the forward and backward passes run under bf16 autocast (weights,
optimizer state and the loss reduction stay fp32); batches and masks are drawn on the CPU,
so both devices see the same ones.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch

from . import data as bdata
from .models import CAUSAL


def _autocast(device: str):
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loss(model, family: str, x: torch.Tensor, mask_seed: int, corpus=None) -> torch.Tensor:
    """Mean cross-entropy over the predicted positions of batch ``x`` (on the CPU)."""
    device = next(model.parameters()).device
    if family in CAUSAL:
        x = x.to(device)
        with _autocast(device.type):
            return model(input_ids=x, labels=x).loss.float()
    inputs, labels = bdata.mask_tokens(x, seed=mask_seed, corpus=corpus)
    inputs, labels = inputs.to(device), labels.to(device)
    with _autocast(device.type):
        hidden = model.bert(input_ids=inputs).last_hidden_state
        picked = labels != -100
        logits = model.cls(hidden[picked])
    return torch.nn.functional.cross_entropy(logits.float(), labels[picked])


@torch.no_grad()
def evaluate(model, family: str, val: torch.Tensor, chunk: int = 32, corpus=None) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(val), chunk):
        x = val[i : i + chunk]
        total += float(_loss(model, family, x, mask_seed=7_777 + i, corpus=corpus)) * len(x)
        n += len(x)
    model.train()
    return total / n


def flops_per_step(model, family: str, batch: int, seq: int) -> float:
    """6 N D + 12 L H T D (Kaplan et al.): N counts every weight but position tables."""
    cfg = model.config
    layers = getattr(cfg, "n_layer", None) or cfg.num_hidden_layers
    hidden = getattr(cfg, "n_embd", None) or cfg.hidden_size
    n = sum(
        p.numel()
        for name, p in model.named_parameters()
        if "position" not in name and "wpe" not in name
    )
    tokens = batch * seq
    return float(6 * n * tokens + 12 * layers * hidden * seq * tokens)


def train(
    model,
    family: str,
    corpus,
    *,
    steps: int,
    seed: int,
    batch: int,
    seq: int,
    lr: float,
    val: torch.Tensor,
    eval_every: int,
    bar=None,
    warmup: float = 0.1,
    device: str = "cpu",
) -> dict[str, Any]:
    """AdamW with linear warmup (``warmup`` of the steps, at least 10) and cosine decay to
    10% of the peak, on ``device``."""
    torch.manual_seed(seed)
    model.to(device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    warm = min(steps, max(10, int(steps * warmup)))

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    curve_steps, curve = [0], [evaluate(model, family, val, corpus=corpus)]
    train_loss = []
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x = bdata.train_batch(corpus, step, seed=seed, batch=batch, seq=seq)
        loss = _loss(model, family, x, mask_seed=1_000_000 * (seed + 1) + step, corpus=corpus)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_loss.append(float(loss.detach()))
        done = step + 1
        if done % eval_every == 0 or done == steps:
            curve_steps.append(done)
            curve.append(evaluate(model, family, val, corpus=corpus))
        if bar is not None:
            bar.update(1)
    return {
        "steps": curve_steps,
        "loss": curve,
        "train_loss_last": train_loss[-1],
        "wall_s": time.perf_counter() - t0,
    }
