"""Ten lines of unrolled: an LSTM, a forward pass, a loss, full BPTT, one gradient step."""

import numpy as np

import unrolled

rng = np.random.default_rng(0)
lstm = unrolled.LSTM(input_size=8, hidden_size=32, num_layers=2, seed=0)
head = unrolled.Linear(32, 1, seed=0)
x = rng.standard_normal((50, 16, 8)).astype(np.float32)  # (T, B, I)
target = x.sum(axis=2, keepdims=True).cumsum(axis=0) / 10  # a running sum to predict
for step in range(201):
    out, (h_n, c_n) = lstm(x)  # out (T, B, H)
    loss, d_y = unrolled.mse(head(out), target)
    d_out, _ = lstm.backward(head.backward(d_y))  # BPTT through all 50 steps
    for layer in (lstm, head):
        for k in layer.params:
            layer.params[k] -= 0.05 * layer.grads[k]  # plain SGD, in place on the live parameters
    if step % 50 == 0:
        print(f"step {step:3d}  mse {loss:.4f}")
