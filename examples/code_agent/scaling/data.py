"""House prices from three features on very different scales (synthetic, fixed seed). Not to be edited."""

import numpy as np


def load():
    rng = np.random.default_rng(0)
    n = 600
    rooms = rng.uniform(1, 8, n)  # a few
    area = rng.uniform(200, 4000, n)  # square feet: thousands
    age = rng.uniform(0.0, 0.1, n)  # centuries: a tenth at most
    x = np.column_stack([rooms, area, age])
    y = 3.0 * rooms + 0.004 * area - 20.0 * age + rng.normal(0, 0.5, n)
    return x[:400], y[:400], x[400:], y[400:]
