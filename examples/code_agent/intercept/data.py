"""Daily demand from temperature and price (synthetic, fixed seed). Not to be edited."""

import numpy as np


def load():
    rng = np.random.default_rng(1)
    n = 500
    temperature = rng.normal(0, 1, n)
    price = rng.normal(0, 1, n)
    x = np.column_stack([temperature, price])
    y = 40.0 + 6.0 * temperature - 4.0 * price + rng.normal(0, 1.0, n)
    return x[:350], y[:350], x[350:], y[350:]
