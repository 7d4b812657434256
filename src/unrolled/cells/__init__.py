"""The cells: each module holds one cell's equations, its forward walk over time and its BPTT.

A cell object is stateless (it holds only options such as the nonlinearity); parameters and
state are passed in and returned, so the same cell serves every layer and direction.
"""

from unrolled.cells.gru import GRUCell
from unrolled.cells.gru_variant import GRUVariantCell
from unrolled.cells.lstm import LSTMCell
from unrolled.cells.lstm_variant import LSTMVariantCell
from unrolled.cells.rnn import RNNCell

__all__ = ["GRUCell", "GRUVariantCell", "LSTMCell", "LSTMVariantCell", "RNNCell"]
