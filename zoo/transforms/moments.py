"""The mean and spread of a large tensor in float64, a block at a time.

Learngenes record each signal's mean and std, and the ``std``/``fan`` amplitude rules
read the std of a source signal and of its resized result. Converting a whole signal to
float64 first costs four times a bf16 signal's bytes (2 GB for one 0.5 GB role of a 1B
model) and one single-threaded pass. Here each block of :data:`BLOCK` elements is
converted, reduced (its count, mean and sum of squared deviations) and freed; the blocks
run side by side, each on one intra-op thread, and are merged in order with Chan et al.'s
pairwise update, so a machine gives the same bits at any thread count and the memory is
a few blocks. This is the rule since transform version 4; the whole-tensor rule of
earlier versions is kept where they are re-derived (``whole=True`` in the callers).
"""

from __future__ import annotations

import math

import torch

from zoo._threads import each_on_one_thread

#: Elements per block (2 MiB in float64): a block's four passes (convert, sum, subtract,
#: square and sum) then run from cache. On a 2-core EPYC the statistics of a 0.5 GB bf16
#: signal took 0.18 s at this size, 0.25 s at 1 << 20, 0.88 s at 1 << 22 and 3.2 s over one
#: float64 copy.
BLOCK = 1 << 18


def _block(b: torch.Tensor) -> tuple[int, float, float]:
    """One block's (count, mean, squared deviations); ``b`` is float64 and is overwritten."""
    k = b.numel()
    mean = b.sum() / k
    b.sub_(mean)
    return k, float(mean), float(b.square_().sum())


class Moments:
    """:func:`moments` of a sequence handed over in consecutive pieces (a signal's layers,
    one at a time): the blocks, hence the bits, are those of the whole sequence at once.

    Example:
        >>> import torch
        >>> m = Moments()
        >>> for part in torch.arange(10.0).split(3):
        ...     m.add(part)
        >>> m.result() == moments(torch.arange(10.0))
        True
    """

    def __init__(self) -> None:
        self._parts: list[tuple[int, float, float]] = []
        self._carry: torch.Tensor | None = None  # the start of a block, in float64

    def add(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1)
        start = 0
        if self._carry is not None:
            need = BLOCK - self._carry.numel()
            head = flat.narrow(0, 0, min(need, flat.numel())).to(torch.float64)
            self._carry = torch.cat([self._carry, head])
            start = head.numel()
            if self._carry.numel() < BLOCK:
                return
            self._parts.append(_block(self._carry))
            self._carry = None
        n = flat.numel() - start
        full = n - n % BLOCK
        cuts = list(range(start, start + full, BLOCK))
        parts: list = [None] * len(cuts)

        def block(j: int) -> None:
            b = flat.narrow(0, cuts[j], BLOCK).to(torch.float64, copy=True)  # changed in place
            parts[j] = _block(b)

        each_on_one_thread([lambda j=j: block(j) for j in range(len(cuts))], flat)
        self._parts += parts
        if full < n:
            self._carry = flat.narrow(0, start + full, n - full).to(torch.float64, copy=True)

    def result(self) -> tuple[int, float, float]:
        """``(count, mean, sum of squared deviations)`` of everything added."""
        parts = list(self._parts)
        if self._carry is not None:
            parts.append(_block(self._carry.clone()))
        if not parts:
            return 0, 0.0, 0.0
        count, mean, m2 = parts[0]
        for k, m, s in parts[1:]:  # Chan et al.'s pairwise update, in order
            total = count + k
            delta = m - mean
            mean += delta * k / total
            m2 += s + delta * delta * count * k / total
            count = total
        return count, mean, m2

    def mean_std(self, *, correction: int = 1) -> tuple[float, float]:
        """:func:`mean_std` of everything added."""
        n, mean, m2 = self.result()
        return (0.0 if math.isnan(mean) else mean), std_of(n, m2, correction)


def moments(x: torch.Tensor) -> tuple[int, float, float]:
    """``(count, mean, sum of squared deviations from the mean)`` of every element of
    ``x``, computed in float64 block by block; blocks depend on the element count only."""
    m = Moments()
    m.add(x)
    return m.result()


def std_of(count: int, m2: float, correction: int) -> float:
    """The std from :func:`moments`' count and squared deviations (0 when undefined)."""
    return math.sqrt(m2 / (count - correction)) if count > correction and m2 > 0.0 else 0.0


def mean_std(x: torch.Tensor, *, correction: int = 1) -> tuple[float, float]:
    """``(mean, std)`` of ``x`` by :func:`moments` (``correction=1``: the sample std, as
    ``torch.std``; 0: the population's); NaN gives 0."""
    m = Moments()
    m.add(x)
    return m.mean_std(correction=correction)
