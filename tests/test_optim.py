"""Tests for charrnn.optim: clipping, each optimizer against hand-derived numbers, schedules, state."""

import math

import numpy as np
import pytest

from charrnn.errors import CharRNNError, UsageError
from charrnn.optim import (OPTIMIZERS, SCHEDULES, SGD, Adagrad, Adam, RMSprop, clip_grad_norm,
                           clip_grad_value, learning_rate, make_optimizer)

EPS = 1e-8
# The two-parameter problem of the hand derivations: p0 = (a, b) and two gradients.
P0 = (1.0, -2.0)
G1 = (0.5, -1.0)
G2 = (-1.0, 0.5)


def two_params(a: float, b: float) -> dict:
    return {"a": np.array([a]), "b": np.array([b])}


def run(opt_cls, hyper: dict, lr: float, grads: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(a, b) after each step of opt_cls from P0 with the given gradients."""
    params = two_params(*P0)
    opt = opt_cls(params, **hyper)
    out = []
    for ga, gb in grads:
        opt.step(params, two_params(ga, gb), lr)
        out.append((params["a"][0], params["b"][0]))
    return out


def assert_steps(got, expected):
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------- optimizers

def test_sgd_plain_one_step():
    # p - lr * g = (1 - 0.1 * 0.5, -2 - 0.1 * -1)
    assert_steps(run(SGD, {}, 0.1, [G1]), [(0.95, -1.9)])


def test_sgd_momentum_two_steps():
    # v1 = g1 = (0.5, -1); p1 = (0.95, -1.9)
    # v2 = 0.9 * v1 + g2 = (0.45 - 1, -0.9 + 0.5) = (-0.55, -0.4); p2 = p1 - 0.1 * v2 = (1.005, -1.86)
    assert_steps(run(SGD, {"momentum": 0.9}, 0.1, [G1, G2]), [(0.95, -1.9), (1.005, -1.86)])


def test_sgd_weight_decay_is_l2():
    # g' = g + 0.1 * p = (0.5 + 0.1, -1 - 0.2) = (0.6, -1.2); p1 = p - 0.1 * g' = (0.94, -1.88)
    assert_steps(run(SGD, {"weight_decay": 0.1}, 0.1, [G1]), [(0.94, -1.88)])


def test_adagrad_two_steps():
    # s1 = g1^2 = (0.25, 1); p1 = p0 - 0.1 * g1 / (sqrt(s1) + eps)
    a1 = 1.0 - 0.1 * 0.5 / (0.5 + EPS)
    b1 = -2.0 + 0.1 * 1.0 / (1.0 + EPS)
    # s2 = s1 + g2^2 = (0.25 + 1, 1 + 0.25) = (1.25, 1.25); p2 = p1 - 0.1 * g2 / (sqrt(s2) + eps)
    a2 = a1 + 0.1 * 1.0 / (math.sqrt(1.25) + EPS)
    b2 = b1 - 0.1 * 0.5 / (math.sqrt(1.25) + EPS)
    assert_steps(run(Adagrad, {"eps": EPS}, 0.1, [G1, G2]), [(a1, b1), (a2, b2)])


def test_rmsprop_two_steps():
    # a1 = 0.1 * g1^2 = (0.025, 0.1); p1 = p0 - 0.01 * g1 / (sqrt(a1) + eps)
    a1 = 1.0 - 0.01 * 0.5 / (math.sqrt(0.025) + EPS)
    b1 = -2.0 + 0.01 * 1.0 / (math.sqrt(0.1) + EPS)
    # a2 = 0.9 * a1 + 0.1 * g2^2 = (0.0225 + 0.1, 0.09 + 0.025) = (0.1225, 0.115)
    a2 = a1 + 0.01 * 1.0 / (0.35 + EPS)
    b2 = b1 - 0.01 * 0.5 / (math.sqrt(0.115) + EPS)
    assert_steps(run(RMSprop, {"alpha": 0.9, "eps": EPS}, 0.01, [G1, G2]), [(a1, b1), (a2, b2)])


def test_adam_two_steps_with_bias_correction():
    # t=1: m = 0.1 * g1, v = 0.001 * g1^2, so m / (1 - 0.9) = g1 and v / (1 - 0.999) = g1^2:
    # the first step is lr * g1 / (|g1| + eps).
    a1 = 1.0 - 0.1 * 0.5 / (0.5 + EPS)
    b1 = -2.0 + 0.1 * 1.0 / (1.0 + EPS)
    # t=2: m = 0.9 * (0.05, -0.1) + 0.1 * (-1, 0.5) = (-0.055, -0.04)
    #      v = 0.999 * (0.00025, 0.001) + 0.001 * (1, 0.25) = (0.00124975, 0.001249)
    #      bias corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999
    a2 = a1 - 0.1 * (-0.055 / 0.19) / (math.sqrt(0.00124975 / 0.001999) + EPS)
    b2 = b1 - 0.1 * (-0.04 / 0.19) / (math.sqrt(0.001249 / 0.001999) + EPS)
    hyper = {"beta1": 0.9, "beta2": 0.999, "eps": EPS}
    assert_steps(run(Adam, hyper, 0.1, [G1, G2]), [(a1, b1), (a2, b2)])


def test_adam_weight_decay_is_decoupled():
    # p *= 1 - lr * wd = 0.99 first; m and v never see the decay, so the step is still lr * sign(g)
    a1 = 0.99 - 0.1 * 0.5 / (0.5 + EPS)
    b1 = -1.98 + 0.1 * 1.0 / (1.0 + EPS)
    assert_steps(run(Adam, {"weight_decay": 0.1, "eps": EPS}, 0.1, [G1]), [(a1, b1)])


@pytest.mark.parametrize("cls", [Adagrad, RMSprop])
def test_adaptive_weight_decay_equals_l2_gradient(cls):
    # With L2 decay the optimizer must behave exactly as without it, fed g + wd * p.
    rng = np.random.default_rng(0)
    p_decay = {"w": rng.standard_normal(6)}
    p_plain = {"w": p_decay["w"].copy()}
    with_decay, plain = cls(p_decay, weight_decay=0.05), cls(p_plain)
    for _ in range(3):
        g = {"w": rng.standard_normal(6)}
        with_decay.step(p_decay, g, 0.01)
        plain.step(p_plain, {"w": g["w"] + 0.05 * p_plain["w"]}, 0.01)
    np.testing.assert_allclose(p_decay["w"], p_plain["w"], rtol=1e-13)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_step_is_in_place_keeps_dtype_and_leaves_grads_alone(name):
    rng = np.random.default_rng(1)
    params = {"x.W": rng.standard_normal((3, 4)).astype(np.float32), "x.b": np.zeros(4, np.float32)}
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    grads_before = {k: v.copy() for k, v in grads.items()}
    arrays = {k: v for k, v in params.items()}
    opt = make_optimizer(name, params, weight_decay=0.01)
    opt.step(params, grads, 0.1)
    for k in params:
        assert params[k] is arrays[k] and params[k].dtype == np.float32
        assert not np.array_equal(params[k], before[k])
        np.testing.assert_array_equal(grads[k], grads_before[k])


# ------------------------------------------------------------------------------------- clipping

def grads_3_4() -> dict:
    # global norm sqrt(3^2 + 4^2) = 5
    return {"a": np.array([3.0]), "b": np.array([[4.0]])}


@pytest.mark.parametrize("max_norm", [10.0, 5.0])
def test_clip_norm_at_or_below_threshold_is_bit_identical(max_norm):
    g = grads_3_4()
    assert clip_grad_norm(g, max_norm) == 5.0
    assert g["a"].tobytes() == np.array([3.0]).tobytes()
    assert g["b"].tobytes() == np.array([[4.0]]).tobytes()


@pytest.mark.parametrize("max_norm", [1.0, 4.5])  # far below the norm 5, and just below it
def test_clip_norm_above_threshold_scales_to_max_norm(max_norm):
    g = grads_3_4()
    assert clip_grad_norm(g, max_norm) == 5.0
    np.testing.assert_allclose(g["a"], [0.6 * max_norm], rtol=1e-15)
    np.testing.assert_allclose(g["b"], [[0.8 * max_norm]], rtol=1e-15)
    assert math.sqrt(g["a"][0] ** 2 + g["b"][0, 0] ** 2) == pytest.approx(max_norm, rel=1e-15)


def test_clip_norm_leaves_non_finite_gradients_for_the_caller():
    g = {"a": np.array([np.inf, 1.0])}
    assert clip_grad_norm(g, 1.0) == math.inf
    np.testing.assert_array_equal(g["a"], [np.inf, 1.0])


def test_clip_grad_value():
    g = {"a": np.array([3.0, -4.0]), "b": np.array([0.5])}
    assert clip_grad_value(g, 1.0) == pytest.approx(math.sqrt(9 + 16 + 0.25), rel=1e-15)
    np.testing.assert_array_equal(g["a"], [1.0, -1.0])
    np.testing.assert_array_equal(g["b"], [0.5])


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, "1"])
def test_clip_rejects_bad_threshold(bad):
    with pytest.raises(UsageError, match="max_norm"):
        clip_grad_norm(grads_3_4(), bad)
    with pytest.raises(UsageError, match="max_value"):
        clip_grad_value(grads_3_4(), bad)


# ------------------------------------------------------------------------------------- schedules

def test_warmup_then_constant():
    rates = [learning_rate(s, 1.0, warmup_steps=4) for s in range(6)]
    assert rates == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_exponential():
    kw = dict(schedule="exponential", decay_rate=0.5, decay_every=10)
    assert learning_rate(5, 2.0, **kw) == pytest.approx(2.0 * 0.5**0.5)
    assert learning_rate(0, 2.0, **kw) == 2.0
    assert learning_rate(20, 2.0, **kw) == pytest.approx(0.5)


def test_step_schedule_with_warmup_counts_decay_after_warmup():
    kw = dict(schedule="step", warmup_steps=4, decay_rate=0.5, decay_every=10)
    assert learning_rate(0, 1.0, **kw) == 0.25
    assert learning_rate(4, 1.0, **kw) == 1.0
    assert learning_rate(13, 1.0, **kw) == 1.0
    assert learning_rate(14, 1.0, **kw) == 0.5
    assert learning_rate(23, 1.0, **kw) == 0.5
    assert learning_rate(24, 1.0, **kw) == 0.25


def test_cosine_with_warmup():
    kw = dict(schedule="cosine", warmup_steps=10, total_steps=110, min_lr=0.1)
    assert learning_rate(0, 1.0, **kw) == pytest.approx(0.1)  # warm-up: 1 / 10
    assert learning_rate(9, 1.0, **kw) == 1.0
    assert learning_rate(10, 1.0, **kw) == 1.0
    # halfway: 0.1 + 0.9 * (1 + cos(pi / 2)) / 2 = 0.55
    assert learning_rate(60, 1.0, **kw) == pytest.approx(0.55)
    # a quarter: 0.1 + 0.9 * (1 + cos(pi / 4)) / 2
    assert learning_rate(35, 1.0, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.sqrt(0.5)))
    assert learning_rate(110, 1.0, **kw) == pytest.approx(0.1)
    assert learning_rate(500, 1.0, **kw) == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="linear"), "constant, exponential, step, cosine"),
    (dict(schedule="cosine"), "total_steps"),
    (dict(schedule="cosine", warmup_steps=10, total_steps=10), "total_steps"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(decay_rate=1.5), "decay_rate"),
    (dict(decay_every=0), "decay_every"),
    (dict(min_lr=2.0), "min_lr"),
])
def test_schedule_validation(kwargs, match):
    with pytest.raises(UsageError, match=match):
        learning_rate(0, 1.0, **kwargs)


def test_schedule_names_are_all_accepted():
    for name in SCHEDULES:
        assert learning_rate(0, 1.0, name, total_steps=10) == 1.0


# ------------------------------------------------------------------------------------- factory and state

def test_make_optimizer_validates_name_and_hyperparameters():
    params = two_params(*P0)
    with pytest.raises(UsageError, match="sgd, adagrad, rmsprop, adam"):
        make_optimizer("adamax", params)
    with pytest.raises(UsageError, match="beta1.*momentum, weight_decay"):
        make_optimizer("sgd", params, beta1=0.9)
    with pytest.raises(UsageError, match="momentum"):
        make_optimizer("sgd", params, momentum=1.0)
    with pytest.raises(UsageError, match="beta2"):
        make_optimizer("adam", params, beta2=-0.1)
    with pytest.raises(UsageError, match="eps"):
        make_optimizer("rmsprop", params, eps=0.0)
    assert isinstance(make_optimizer("adam", params, beta1=0.8), Adam)


HYPER = {"sgd": dict(momentum=0.9, weight_decay=0.01), "adagrad": dict(weight_decay=0.01),
         "rmsprop": dict(alpha=0.9), "adam": dict(weight_decay=0.01)}


def trained(name: str, rng: np.random.Generator, steps: int = 3):
    params = {"l.W": random_like((3, 4), rng), "l.b": random_like((4,), rng)}
    opt = make_optimizer(name, params, **HYPER[name])
    for _ in range(steps):
        opt.step(params, {k: random_like(v.shape, rng) for k, v in params.items()}, 0.05)
    return params, opt


def random_like(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_gives_identical_next_steps(name):
    rng = np.random.default_rng(2)
    params, opt = trained(name, rng)
    sd = opt.state_dict()
    assert sd["step"].shape == () and sd["step"].dtype == np.int64 and int(sd["step"]) == 3
    params2 = {k: v.copy() for k, v in params.items()}
    opt2 = make_optimizer(name, params2, **HYPER[name])
    opt2.load_state_dict(sd)
    for _ in range(2):
        grads = {k: random_like(v.shape, rng) for k, v in params.items()}
        opt.step(params, grads, 0.05)
        opt2.step(params2, grads, 0.05)
    for k in params:
        np.testing.assert_array_equal(params[k], params2[k])


def test_state_dict_keys_and_copies():
    _, opt = trained("adam", np.random.default_rng(3))
    sd = opt.state_dict()
    assert sorted(sd) == ["l.W.m", "l.W.v", "l.b.m", "l.b.v", "step"]
    sd["l.W.m"][...] = 123.0  # a copy: the optimizer must not see this
    assert not np.any(opt.state_dict()["l.W.m"] == 123.0)
    assert sorted(SGD({"w": np.zeros(2)}).state_dict()) == ["step"]


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("l.W.v"), "missing 'l.W.v'"),
    (lambda d: d.pop("step"), "missing 'step'"),
    (lambda d: d.update({"l.W.velocity": np.zeros((3, 4))}), "unexpected 'l.W.velocity'"),
    (lambda d: d.update({"l.b.m": np.zeros(5)}), "'l.b.m' has shape"),
    (lambda d: d.update({"step": np.array([3])}), "'step'"),
    (lambda d: d.update({"step": np.array(-1)}), "'step'"),
])
def test_load_state_dict_rejects_bad_state_and_changes_nothing(edit, match):
    _, opt = trained("adam", np.random.default_rng(4))
    before = opt.state_dict()
    bad = trained("adam", np.random.default_rng(5), steps=1)[1].state_dict()
    edit(bad)
    with pytest.raises(CharRNNError, match=match):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after.keys() == before.keys()
    for k in after:
        np.testing.assert_array_equal(after[k], before[k])
