"""Every hand-written backward pass against central differences, in float64."""

import pytest

from charrnn.gradcheck import check_model, random_problem

THRESHOLD = 1e-6

CELLS = [
    ("lstm", {}),
    ("lstm", {"peephole": True}),
    ("gru", {}),
    ("rnn", {"nonlinearity": "tanh"}),
    ("rnn", {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("cell,extra", CELLS, ids=lambda v: v if isinstance(v, str) else str(v))
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("embedding", [0, 4], ids=["onehot", "embed"])
def test_every_gradient_matches_finite_differences(cell, extra, layers, embedding):
    model, x, y, state = random_problem(cell, layers, steps=5, batch=2, vocab=5, hidden=3,
                                        embedding=embedding, **extra)
    errors = check_model(model, x, y, state)
    expected = set(model.params) | {f"state.{l}.{n}" for l, c in enumerate(model.cells)
                                    for n in c.state_names}
    assert set(errors) == expected
    bad = {k: v for k, v in errors.items() if v > THRESHOLD}
    assert not bad, bad


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_dropout_gradients_with_fixed_masks(cell):
    model, x, y, state = random_problem(cell, 2, steps=4, embedding=4, dropout=0.3)
    errors = check_model(model, x, y, state, dropout_seed=7)
    assert max(errors.values()) < THRESHOLD, errors


def test_the_check_detects_a_wrong_gradient(monkeypatch):
    """A gradient check that cannot fail proves nothing: break one gradient on purpose."""
    model, x, y, state = random_problem("lstm", 1)
    original = model.forward_backward

    def broken(*args, **kwargs):
        loss, grads, dstate0, new_state = original(*args, **kwargs)
        grads["layers.0.b"] = grads["layers.0.b"] * 1.01
        return loss, grads, dstate0, new_state

    monkeypatch.setattr(model, "forward_backward", broken)
    errors = check_model(model, x, y, state)
    assert errors["layers.0.b"] > 1e-3
    assert errors["layers.0.Wh"] < THRESHOLD
