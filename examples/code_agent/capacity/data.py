"""A wavy curve with noise (synthetic, fixed seed). Not to be edited."""

import numpy as np


def load():
    rng = np.random.default_rng(2)
    n = 600
    x = rng.uniform(-3, 3, (n, 1))
    y = np.sin(3 * x[:, 0]) + 0.3 * x[:, 0] + rng.normal(0, 0.1, n)
    return x[:400], y[:400], x[400:], y[400:]
