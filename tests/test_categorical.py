"""categorical.draw: the same ids as the rule it speeds up, on every kind of row and every u."""

import numpy as np
import pytest

from charrnn import categorical
from charrnn.categorical import _by_blocks, _by_the_rule, draw


def _rows(kind: str, B: int, V: int, rng) -> np.ndarray:
    """(B, V) float64 unnormalised probabilities as the sampler makes them (largest exactly 1)."""
    z = rng.standard_normal((B, V)) * {"flat": 0.1, "peaked": 4.0, "wide": 12.0}.get(kind, 2.0)
    if kind == "sparse":  # top-k / top-p / a poem's mask: most ids exactly 0
        z[rng.random((B, V)) < 0.97] = -np.inf
        z[:, rng.integers(V)] = 3.0
    if kind == "one":  # a single id of probability > 0 per row
        z[:] = -np.inf
        z[np.arange(B), rng.integers(0, V, B)] = 0.0
    z -= z.max(axis=1, keepdims=True)
    return np.exp(z)


def _rule_ratios(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p, axis=1)
    return c / c[:, -1:]


KINDS = ["normal", "flat", "peaked", "wide", "sparse", "one"]
WIDTHS = [1024, 1025, 1087, 4096, 6800]


@pytest.mark.parametrize("V", WIDTHS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_block_draw_equals_the_rule_for_random_uniforms(kind, V):
    rng = np.random.default_rng(V)
    p = _rows(kind, 64, V, rng)
    before = p.copy()
    for _ in range(20):
        u = rng.random(64)
        assert np.array_equal(draw(p, u), _by_the_rule(p, u))
    assert np.array_equal(p, before)  # p is the caller's: left as it was


@pytest.mark.parametrize("V", WIDTHS)
@pytest.mark.parametrize("kind", ["normal", "peaked", "sparse"])
def test_the_block_draw_equals_the_rule_where_u_sits_on_a_boundary(kind, V):
    """u exactly at a rule ratio c[j] / C and one float64 step either side: the draws where the
    block sums cannot decide, and where an off-by-one would show."""
    rng = np.random.default_rng(7 * V)
    p = _rows(kind, 16, V, rng)
    ratios = _rule_ratios(p)
    for _ in range(30):
        j = rng.integers(0, V - 1, 16)
        at = ratios[np.arange(16), j]
        for u in (np.nextafter(at, 0), at, np.nextafter(at, 1)):
            u = np.minimum(u, np.nextafter(1.0, 0))
            assert np.array_equal(draw(p, u), _by_the_rule(p, u))


def test_the_blocks_decide_almost_every_draw_and_leave_boundaries_to_the_rule():
    """The fast path is the one taken (else the module would be the rule plus overhead), and
    a u on a boundary is the case it hands back."""
    rng = np.random.default_rng(3)
    p = _rows("normal", 64, 6800, rng)
    decided = np.concatenate([_by_blocks(p, rng.random(64)) for _ in range(50)])
    assert (decided >= 0).all()
    ratios = _rule_ratios(p)
    on_boundary = ratios[np.arange(64), rng.integers(0, 6799, 64)]
    assert (_by_blocks(p, on_boundary) == -1).all()


def test_an_id_of_probability_zero_is_never_drawn():
    rng = np.random.default_rng(11)
    p = _rows("sparse", 64, 6800, rng)
    for _ in range(200):
        ids = draw(p, rng.random(64))
        assert (p[np.arange(64), ids] > 0).all()


def test_a_row_with_its_only_mass_at_the_last_id_and_u_near_one():
    p = np.zeros((3, 2000))
    p[:, -1] = 1.0
    p[1, 5] = 1e-300
    p[2, :] = 1e-3
    u = np.array([0.0, np.nextafter(1.0, 0), 0.5])
    assert np.array_equal(draw(p, u), _by_the_rule(p, u))
    assert draw(p, u)[0] == 1999


def test_narrow_rows_take_the_rule_itself(monkeypatch):
    def fail(p, u):
        raise AssertionError("block search used below the width where it pays")

    monkeypatch.setattr(categorical, "_by_blocks", fail)
    rng = np.random.default_rng(5)
    p = _rows("normal", 8, categorical._WIDE - 1, rng)
    u = rng.random(8)
    assert np.array_equal(draw(p, u), _by_the_rule(p, u))
