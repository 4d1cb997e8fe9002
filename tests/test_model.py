"""CharRNN as a whole: initial loss, the state contract, evaluation, and that it learns."""

import numpy as np
import pytest

from charrnn.corpus import BatchStream, Vocab
from charrnn.reading import read_text
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN, ModelSpec
from charrnn.optim import Adam, clip_grad_norm


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding", [0, 16])
def test_initial_loss_is_close_to_log_vocab(cell, embedding):
    rng = np.random.default_rng(0)
    V = 65
    model = CharRNN(ModelSpec(V, 64, 2, cell=cell, embedding_size=embedding))
    model.init_params(rng)
    x = rng.integers(0, V, size=(16, 32))
    y = rng.integers(0, V, size=(16, 32))
    loss, _, _ = model.loss_and_grads(x, y, model.init_state(16))
    assert abs(loss - np.log(V)) < 0.1


def test_state_is_not_modified_and_window_split_matches_one_window():
    rng = np.random.default_rng(1)
    model = CharRNN(ModelSpec(11, 8, 2, cell="lstm", dtype=np.float64))
    model.init_params(rng)
    x = rng.integers(0, 11, size=(3, 10))
    y = rng.integers(0, 11, size=(3, 10))
    state = [tuple(rng.normal(size=a.shape) for a in layer) for layer in model.init_state(3)]
    before = [tuple(a.copy() for a in layer) for layer in state]
    loss_full, _, final_full = model.loss_and_grads(x, y, state)
    for layer, saved in zip(state, before):
        for a, b in zip(layer, saved):
            np.testing.assert_array_equal(a, b)
    loss_a, _, mid = model.loss_and_grads(x[:, :4], y[:, :4], state)
    loss_b, _, final_split = model.loss_and_grads(x[:, 4:], y[:, 4:], mid)
    assert np.isclose((4 * loss_a + 6 * loss_b) / 10, loss_full, rtol=1e-12)
    for la, lb in zip(final_full, final_split):
        for a, b in zip(la, lb):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_nll_and_step_agree_with_training_loss():
    rng = np.random.default_rng(2)
    model = CharRNN(ModelSpec(9, 6, 2, cell="gru", embedding_size=5, dtype=np.float64))
    model.init_params(rng)
    model.params["head.b"][:] = rng.normal(size=9)  # zero at init, which would hide a lost bias
    x = rng.integers(0, 9, size=(2, 7))
    y = rng.integers(0, 9, size=(2, 7))
    loss, _, final = model.loss_and_grads(x, y, model.init_state(2))
    nll, final_eval = model.nll(x, y, model.init_state(2))
    assert nll.shape == (2, 7)
    assert np.isclose(nll.mean(), loss, rtol=1e-12)
    state = model.init_state(2)
    for t in range(7):
        logits, state = model.step(x[:, t], state)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(-logp[np.arange(2), y[:, t]], nll[:, t], rtol=1e-10)
    np.testing.assert_allclose(state[0][0], final_eval[0][0], rtol=1e-12)


def test_dropout_only_when_an_rng_is_given():
    rng = np.random.default_rng(3)
    model = CharRNN(ModelSpec(7, 8, 2, cell="lstm", dropout=0.5))
    model.init_params(rng)
    x = rng.integers(0, 7, size=(2, 5))
    state = model.init_state(2)
    a = model.loss_and_grads(x, x, state)[0]
    b = model.loss_and_grads(x, x, state)[0]
    c = model.loss_and_grads(x, x, state, rng=np.random.default_rng(0))[0]
    assert a == b and a != c


# PyTorch's nn.LSTM / GRU / RNN with one-hot input and default initialisation reach about
# 1.95, 1.75 and 1.87 nats in this setting.
@pytest.mark.parametrize("cell,target", [("lstm", 2.0), ("gru", 2.0), ("rnn", 2.1)])
def test_learns_tinyshakespeare(cell, target, repo_root):
    text = read_text(repo_root / "corpora" / "tinyshakespeare.txt")[:100_000]
    vocab = Vocab.build(text)
    stream = BatchStream(vocab.encode(text), batch_size=32, seq_len=64)
    model = CharRNN(ModelSpec(len(vocab), 128, 1, cell=cell))
    params = model.init_params(np.random.default_rng(0))
    optimizer = Adam(params)
    state = model.init_state(32)
    losses = []
    for step in range(600):
        k = step % stream.windows_per_epoch
        if k == 0:
            state = model.init_state(32)
        x, y = stream.window(k)
        loss, grads, state = model.loss_and_grads(x, y, state)
        clip_grad_norm(grads, 5.0)
        optimizer.step(params, grads, 2e-3)
        losses.append(loss)
    assert np.mean(losses[-20:]) < target


def _clone_without_dropout(model: CharRNN) -> CharRNN:
    twin = CharRNN(model.spec)
    twin.params = {name: value.copy() for name, value in model.params.items()}
    return twin


def test_evaluation_never_applies_dropout():
    rng = np.random.default_rng(4)
    model = CharRNN(ModelSpec(7, 8, 2, cell="lstm", embedding_size=4, dropout=0.5, dtype=np.float64))
    model.init_params(rng)
    x = rng.integers(0, 7, size=(3, 6))
    y = rng.integers(0, 7, size=(3, 6))
    nll, _ = model.nll(x, y, model.init_state(3))
    plain, _ = _clone_without_dropout(model).nll(x, y, model.init_state(3))
    np.testing.assert_array_equal(nll, plain)
    ids = np.array([1, 2, 3])
    np.testing.assert_array_equal(model.step(ids, model.init_state(3))[0],
                                  _clone_without_dropout(model).step(ids, model.init_state(3))[0])


@pytest.mark.parametrize("layers", [1, 2])
def test_dropout_scales_kept_units_by_one_over_the_keep_probability(layers):
    # With every unit kept, inverted dropout (p = 0.5) doubles each layer's output. That is the
    # same network with the weights reading those outputs (the next layer's Wx, the head's W)
    # doubled and no dropout.
    rng = np.random.default_rng(5)
    model = CharRNN(ModelSpec(7, 8, layers, cell="gru", dropout=0.5, dtype=np.float64))
    model.init_params(rng)
    x = rng.integers(0, 7, size=(3, 6))
    y = rng.integers(0, 7, size=(3, 6))
    keep = np.ones((layers, 6, 3, 8), dtype=bool)
    loss = model.loss_and_grads(x, y, model.init_state(3), keep=keep)[0]
    doubled = _clone_without_dropout(model)
    doubled.params["head.W"] *= 2
    for layer in range(1, layers):
        doubled.params[f"layers.{layer}.Wx"] *= 2
    assert loss == pytest.approx(doubled.loss_and_grads(x, y, model.init_state(3))[0], rel=1e-12)
    assert loss != pytest.approx(_clone_without_dropout(model).loss_and_grads(
        x, y, model.init_state(3))[0], rel=1e-6)


def _reference_mean_nll(model: CharRNN, ids: np.ndarray, rows: int) -> float:
    """evaluate()'s rule written out one character at a time: the len(ids) - 1 (input, target)
    pairs in `rows` contiguous rows of ceil(n / rows), each row read from a zero state."""
    n = len(ids) - 1
    width = -(-n // rows)
    total = 0.0
    for start in range(0, n, width):
        state = model.init_state(1)
        for t in range(start, min(start + width, n)):
            logits, state = model.step(ids[t : t + 1], state)
            z = logits[0] - logits[0].max()
            total += np.log(np.exp(z).sum()) - z[ids[t + 1]]
    return total / n


@pytest.mark.parametrize("length", [41, 42, 40])  # 40, 41 and 39 pairs in 4 rows of 10
def test_evaluate_is_the_mean_over_real_characters_only(length):
    rng = np.random.default_rng(6)
    model = CharRNN(ModelSpec(9, 8, 2, cell="lstm", dtype=np.float64))
    model.init_params(rng)
    ids = rng.integers(0, 9, size=length)
    got = evaluate(model, ids, batch_size=4, seq_len=3)
    assert got == pytest.approx(_reference_mean_nll(model, ids, 4), rel=1e-12)


@pytest.mark.parametrize("dropout", [0.1, 0.3])
def test_dropout_keeps_each_unit_with_probability_one_minus_p(dropout):
    model = CharRNN(ModelSpec(7, 64, 2, cell="lstm", dropout=dropout))
    keep = model.dropout_keep(np.random.default_rng(8), batch_size=32, seq_len=50)
    assert keep.shape == (2, 50, 32, 64) and keep.dtype == bool
    # 204,800 draws: the kept fraction is within 0.005 of 1 - p (more than 4 standard deviations).
    assert abs(keep.mean() - (1 - dropout)) < 0.005


def test_the_model_section_and_the_model_spec_are_one_schema():
    """Every key of the config's model section is a ModelSpec field with the same default, and
    the spec adds only what the corpus and train.dtype decide."""
    import dataclasses

    from charrnn.config import ModelConfig

    section = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    spec = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    assert set(spec) == set(section) | set(ModelSpec.NOT_IN_CONFIG)
    for name, default in spec.items():
        if name in section and default is not dataclasses.MISSING:
            assert default == section[name], name


def test_a_model_spec_survives_its_checkpoint_form():
    spec = ModelSpec(9, 8, 2, cell="lstm", head="adaptive", head_cutoffs=np.array([3, 6]),
                     head_order=np.arange(9)[::-1], dtype=np.float64)
    import json
    import dataclasses

    again = ModelSpec(**json.loads(json.dumps(dataclasses.asdict(spec))))
    assert again == spec and again.dtype == "float64" and again.head_cutoffs == [3, 6]
