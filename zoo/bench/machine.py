"""What machine a benchmark ran on, for its results file."""

from __future__ import annotations

from zoo._machine import cpu_model

__all__ = ["cpu_model"]
