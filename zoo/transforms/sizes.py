"""How ``resize`` splits a size change into whole DWT levels and a DCT bridge.

Rule (per axis, source length S, target T):

* shrink (T < S): take whole analysis levels while the current length is even and its
  half is still >= T; call the length reached M. If M != T, bridge M -> T with a DCT
  resize (band-limited, ratio < 2 unless M is odd).
* grow (T > S): the mirror image. M is what the shrink rule gives for T -> S (halve T
  while even and >= S); bridge S -> M with a DCT resize first, then synthesize whole
  levels M -> T with zero details.

Because growing is exactly the mirror of shrinking, ``grow(T <- S)`` is the adjoint of
``shrink(S -> T)`` for orthogonal wavelets, and shrink-then-grow is an orthogonal
projection. The DCT bridge always runs on the smaller side, where it is cheapest.
"""

from __future__ import annotations


def dyadic_plan(s: int, t: int) -> tuple[int, int]:
    """``(levels, mid)`` for one axis: DWT levels and the length at the DCT bridge.

    Shrink: ``S -(levels)-> mid -(dct)-> T``. Grow: ``S -(dct)-> mid -(levels)-> T``.

    Example:
        >>> [dyadic_plan(*p) for p in [(12, 6), (768, 1024), (768, 2048), (13, 6), (7, 14)]]
        [(1, 6), (0, 1024), (1, 1024), (0, 13), (1, 7)]
    """
    from ._checks import check_count

    s, t = check_count(s, "s"), check_count(t, "t")
    small, big = min(s, t), max(s, t)
    levels, mid = 0, big
    while s != t and mid % 2 == 0 and mid // 2 >= small:
        mid //= 2
        levels += 1
    return levels, mid
