"""charrnn: character-level LSTM / GRU / vanilla-RNN language models in pure NumPy."""

__version__ = "0.1.0"

from .checkpoint import load_model
from .corpus import BatchStream, Vocab, split
from .reading import read_text
from .model import CharRNN, ModelSpec
from .optim import SGD, Adagrad, Adam, RMSprop, clip_grad_norm, learning_rate
from .sample import generate

__all__ = ["Adagrad", "Adam", "BatchStream", "CharRNN", "ModelSpec", "RMSprop", "SGD", "Vocab", "__version__",
           "clip_grad_norm", "generate", "learning_rate", "load_model", "read_text", "split"]
