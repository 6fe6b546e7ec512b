"""Progress bars for long work, on stderr, only when asked (the CLI asks on a terminal)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int, desc: str, *, enabled: bool, unit: str = "B") -> Iterator:
    if not enabled:
        yield _Silent()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False) as bar:
        yield bar
