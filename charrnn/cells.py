"""The recurrent cells by name: LSTM (optionally with peepholes), GRU and the vanilla RNN.

Each lives in its own module (lstm.py, gru.py, rnn.py) and follows the contract of
cell_base.py; reference.py has the same three written for reading.
"""

from __future__ import annotations

from . import names
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN


CELLS = dict(zip(names.CELLS, (LSTM, GRU, RNN)))  # by config name


def make_cell(kind: str, input_size: int, hidden_size: int, *, peephole: bool = False,
              nonlinearity: str = "tanh"):
    """Build a cell by name ('lstm', 'gru' or 'rnn')."""
    if kind == "lstm":
        return LSTM(input_size, hidden_size, peephole=peephole)
    if kind == "gru":
        return GRU(input_size, hidden_size)
    if kind == "rnn":
        return RNN(input_size, hidden_size, nonlinearity=nonlinearity)
    raise ValueError(f"unknown cell {kind!r}; expected one of {sorted(CELLS)}")
