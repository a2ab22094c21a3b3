"""A one-hidden-layer tanh network in numpy."""

import numpy as np

HIDDEN = 2


def init(inputs, seed=0):
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 1, (inputs, HIDDEN)), "b1": np.zeros(HIDDEN),
            "w2": rng.normal(0, 1 / np.sqrt(HIDDEN), HIDDEN), "b2": 0.0}


def forward(p, x):
    h = np.tanh(x @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"], h


def step(p, x, y, lr):
    out, h = forward(p, x)
    err = 2 * (out - y) / len(y)
    dh = np.outer(err, p["w2"]) * (1 - h ** 2)
    p["w2"] -= lr * h.T @ err
    p["b2"] -= lr * err.sum()
    p["w1"] -= lr * x.T @ dh
    p["b1"] -= lr * dh.sum(0)
