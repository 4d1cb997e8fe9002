"""The names a config chooses from, in one place. Config validation offers exactly these; the
modules that build the things (cells.CELLS, optim.OPTIMIZERS, optim.SCHEDULES) are keyed by
them, and a test checks that the two agree."""

CELLS = ("lstm", "gru", "rnn")
NONLINEARITIES = ("tanh", "relu")           # of the vanilla RNN
HEADS = ("full", "adaptive")
OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam")
SCHEDULES = ("constant", "exponential", "step", "cosine")
CLIP_MODES = ("norm", "value")
DTYPES = ("float32", "float64")
