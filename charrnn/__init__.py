"""charrnn: character-level LSTM / GRU / vanilla-RNN language models in pure NumPy."""

__version__ = "0.1.0"
