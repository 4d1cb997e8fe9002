"""The inverse-CDF draw behind `sample.choose`: exact, and fast on wide rows.

The rule: with c the float64 cumulative sum of a row's unnormalised probabilities p, summed left
to right (np.cumsum), and C = c[-1], a uniform u in [0, 1) draws the number of ids j with
c[j] / C <= u, i.e. the first id whose cumulative probability exceeds u. An id of probability 0
adds nothing to c, so its interval is empty and it is never drawn; c[-1] / C is exactly 1 > u.

Applied as written, the rule costs four passes over every row (the running sum, which is
sequential and the slowest, a division, a comparison and a count): with 64 streams over 6,800
characters they cost more than the model's matrix products. `draw` finds the same id from sums
of blocks of 64 ids instead, a running sum over the blocks, and a running sum inside the one
block where u falls. Those sums round differently from np.cumsum, but both stay within
(V + 1) float64 ulps of the exact prefix sums, so the ratio they give for any id is within
`_margin(V)` of the rule's. Where u is farther than that from the ratios on both sides of the
found id the rule must draw the same id; the rare rows where it is not (about one draw in
4 x 10^10 for V = 6,800) are drawn by the rule itself.
"""

from __future__ import annotations

import numpy as np

__all__ = ["draw"]

# Ids per block. Rows narrower than _WIDE take the rule as written: there its four passes cost
# less than the block search's fifteen or so NumPy calls.
_BLOCK = 64
_WIDE = 1024
_ONES = np.ones(_BLOCK)


def draw(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The rule above for every row: p (B, V) float64, finite and >= 0, every row with a positive
    entry (p is not modified); u (B,) float64 in [0, 1). Returns ids (B,) int64."""
    if p.shape[1] < _WIDE:
        return _by_the_rule(p, u)
    ids = _by_blocks(p, u)
    unsure = ids < 0
    if unsure.any():
        ids[unsure] = _by_the_rule(p[unsure], u[unsure])
    return ids


def _by_the_rule(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    c = np.cumsum(p, axis=1)
    c /= c[:, -1:]  # x / x == 1 exactly, so u < 1 always finds an id
    return (c <= u[:, None]).sum(axis=1, dtype=np.int64)


def _margin(V: int) -> float:
    """Twice the largest gap between a block-sum ratio and the rule's ratio for the same id:
    sequential or blocked, a sum of at most V terms >= 0 is within V ulps (2^-53 relative) of
    the exact one, which puts the two ratios within (4 V + 2) 2^-53 of each other."""
    return (4 * V + 64) * 2.0**-52


def _by_blocks(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The rule's id per row, or -1 where u lies within _margin of the ratios beside it."""
    B, V = p.shape
    W = _BLOCK
    full = V // W
    sums = np.empty((B, -(-V // W)))                             # (B, blocks)
    # A product with ones sums the blocks in a third of the time of .sum(axis=2), which reduces
    # each short block separately; the margin holds for any summation order.
    np.matmul(p[:, : full * W].reshape(B, full, W), _ONES, out=sums[:, :full])
    if full * W < V:
        p[:, full * W :].sum(axis=1, out=sums[:, full])
    ends = np.cumsum(sums, axis=1)                               # ~ c at each block's last id
    total = ends[:, -1:]                                         # (B, 1) ~ C
    # The block holding the drawn id: blocks whose last id lies at or below u come before it
    # (the last block's ratio is exactly 1 > u, so at most blocks - 1 of them).
    block = (ends / total <= u[:, None]).sum(axis=1)             # (B,)
    rows = np.arange(B)
    cols = block[:, None] * W + np.arange(W)                     # (B, W) ids of that block
    # prefix[:, k] ~ c[block * W + k - 1]: the running sum from the blocks before, k = 0 ... W
    prefix = np.empty((B, W + 1))
    prefix[:, 0] = np.where(block > 0, ends[rows, block - 1], 0.0)
    prefix[:, 1:] = np.take_along_axis(p, np.minimum(cols, V - 1), axis=1)
    prefix[:, 1:][cols >= V] = 0.0                               # the last block may be short
    np.cumsum(prefix, axis=1, out=prefix)
    ratio = prefix / total                                       # (B, W + 1)
    k = (ratio[:, 1:] <= u[:, None]).sum(axis=1)                 # ids of the block at or below u
    below = ratio[rows, k]                                       # ~ c[id - 1] / C
    above = ratio[rows, np.minimum(k + 1, W)]                    # ~ c[id] / C
    margin = _margin(V)
    sure = (below <= u - margin) & (above > u + margin) & (k < W)
    return np.where(sure, block * W + k, -1)
