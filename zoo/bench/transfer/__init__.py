"""The transfer benchmark: does a materialized model train faster than scratch and baselines?

:func:`run_transfer` obtains a source checkpoint (a registered one, real or trained here,
or one it trains for a short budget and registers in a zoo registry), initializes the
target size once per method *through zoo's own API* (``reg.extract`` + ``reg.materialize``,
so it measures what users get), trains every method for the same budget on the same
batches with the same seeds, and reports validation loss at step 0 and at the end, the
steps each method needs to reach scratch's and the best training-free baseline's final
loss, steps and FLOPs saved, and a win/tie/loss verdict (a difference within the seed
spread is a tie). It writes JSON and a PNG of the mean loss curves.

The modules follow the run:

- :mod:`.data`: the corpora (bytes of the Python standard library's source for sources
  trained here; English text in the source's own tokenizer for real checkpoints) and the
  batches, the same for every method.
- :mod:`.sources`: the source checkpoint and its tokenizer.
- :mod:`.models`: the benchmark's model classes and configs (masked LM for ``bert``,
  causal LM for ``gpt2`` and ``llama``), loading a derived state into them.
- :mod:`.methods`: the method grammar (``dwt:db2:fan+dz`` and the like).
- :mod:`.initializations`: each method's initial state, made through zoo's API, and the
  benchmark-only ablations.
- :mod:`.training`: the loss, the training loop, validation (CPU or CUDA with bf16
  autocast, the same batches on either).
- :mod:`.statistics`: spreads, steps to reach a loss, verdicts and targets.
- :mod:`.report`: the JSON, the plot and the markdown table.
- :mod:`.run`: :func:`run_transfer`, which ties them together.
"""

from __future__ import annotations

from .initializations import (
    HEAD_AXES,
    RESIDUAL_WRITERS,
    baseline_for,
    depth_by_rule,
    embeddings_from,
    heads_aware,
    in_order,
    initialize,
    residual_depth_scaled,
    shared_norms,
    zoo_default_method,
)
from .methods import BASELINES, MethodSpec, default_methods, parse_method
from .models import (
    ARCH,
    CAUSAL,
    FAMILIES,
    TIED,
    build_model,
    default_lr,
    load_state,
    parse_size,
    source_config,
)
from .report import machine, markdown_table, plot, write_report
from .run import run_transfer
from .sources import obtain_source, source_tokenizer
from .statistics import (
    STEPS_RULE,
    add_targets,
    check_targets,
    compare,
    first_crossing,
    mean,
    merge_reports,
    rescore,
    spread,
    steps_to_reach,
    summarize,
    verdict,
)
from .training import evaluate, flops_per_step, train

__all__ = [
    "ARCH",
    "BASELINES",
    "CAUSAL",
    "FAMILIES",
    "HEAD_AXES",
    "RESIDUAL_WRITERS",
    "STEPS_RULE",
    "TIED",
    "MethodSpec",
    "add_targets",
    "baseline_for",
    "build_model",
    "check_targets",
    "compare",
    "default_lr",
    "default_methods",
    "depth_by_rule",
    "embeddings_from",
    "evaluate",
    "first_crossing",
    "flops_per_step",
    "heads_aware",
    "in_order",
    "initialize",
    "load_state",
    "machine",
    "markdown_table",
    "mean",
    "merge_reports",
    "obtain_source",
    "parse_method",
    "parse_size",
    "plot",
    "rescore",
    "residual_depth_scaled",
    "run_transfer",
    "shared_norms",
    "source_config",
    "source_tokenizer",
    "spread",
    "steps_to_reach",
    "summarize",
    "train",
    "verdict",
    "write_report",
    "zoo_default_method",
]
