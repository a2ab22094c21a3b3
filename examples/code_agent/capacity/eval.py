"""The score: validation MSE of preds.npy. Not to be edited."""

import numpy as np
from data import load

_, _, _, y_val = load()
preds = np.load("preds.npy")
print(f"val_mse: {float(np.mean((preds - y_val) ** 2)):.6f}")
