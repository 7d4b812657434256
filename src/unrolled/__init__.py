"""unrolled: recurrent neural networks with hand-written, verified backpropagation through time."""

from unrolled.layers import GRU, LSTM, RNN, RecurrentLayer
from unrolled.nn import Linear, cross_entropy, log_softmax, mse, sigmoid, softmax

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Linear",
    "RecurrentLayer",
    "cross_entropy",
    "log_softmax",
    "mse",
    "sigmoid",
    "softmax",
]
