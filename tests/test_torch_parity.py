"""The fast LSTM and GRU against PyTorch's nn.LSTM and nn.GRU from the same weights: outputs,
final state and every gradient (parameters, input, initial state), float64. Runs where torch is
installed (the [bench] extra); skipped, and counted as skipped, where it is not."""

import numpy as np
import pytest

from charrnn.cells import GRU, LSTM

T, B, D, H = 6, 3, 5, 4


def _inputs(n_states, rng):
    x = rng.normal(size=(T, B, D))
    state = tuple(rng.normal(size=(B, H)) for _ in range(n_states))
    dhs = rng.normal(size=(T, B, H))
    dstate = tuple(rng.normal(size=(B, H)) for _ in range(n_states))
    return x, state, dhs, dstate


def _torch_run(torch, module, x, state, dhs, dstate):
    """Forward and backward of the loss sum(hs * dhs) + sum(final * dstate) through module."""
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in state]
    hs, final = module(xt, st[0] if len(st) == 1 else tuple(st))
    final = (final,) if len(st) == 1 else final
    loss = (hs * torch.from_numpy(dhs)).sum()
    for f, d in zip(final, dstate):
        loss = loss + (f[0] * torch.from_numpy(d)).sum()
    loss.backward()
    return hs, final, xt.grad, [s.grad[0] for s in st]


def _close(ours, theirs):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_same_outputs_and_gradients_as_pytorch(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    cell = (LSTM if kind == "lstm" else GRU)(D, H)
    p = cell.init_params(rng, dtype=np.float64)
    for name in p:  # nonzero biases, so that each one's place in the equations is tested
        p[name] = rng.normal(size=p[name].shape) * 0.5
    module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(D, H).double()
    with torch.no_grad():  # torch stores (gates, in) matrices: the transposes of Wx and Wh
        module.weight_ih_l0.copy_(torch.from_numpy(p["Wx"].T))
        module.weight_hh_l0.copy_(torch.from_numpy(p["Wh"].T))
        if kind == "lstm":  # one bias vector: torch's second one held at zero
            module.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
            module.bias_hh_l0.zero_()
        else:
            module.bias_ih_l0.copy_(torch.from_numpy(p["bx"]))
            module.bias_hh_l0.copy_(torch.from_numpy(p["bh"]))
    x, state, dhs, dstate = _inputs(len(cell.state_names), rng)

    hs, final, cache = cell.forward(p, x, state)
    dx, dstate0, grads = cell.backward(p, dhs, dstate, cache)
    t_hs, t_final, t_dx, t_dstate0 = _torch_run(torch, module, x, state, dhs, dstate)

    _close(hs, t_hs)
    for ours, theirs in zip(final, t_final):
        _close(ours, theirs[0])
    _close(dx, t_dx)
    for ours, theirs in zip(dstate0, t_dstate0):
        _close(ours, theirs)
    _close(grads["Wx"], module.weight_ih_l0.grad.T)
    _close(grads["Wh"], module.weight_hh_l0.grad.T)
    if kind == "lstm":
        _close(grads["b"], module.bias_ih_l0.grad)
    else:
        _close(grads["bx"], module.bias_ih_l0.grad)
        _close(grads["bh"], module.bias_hh_l0.grad)
