"""Trains model.py's network by full-batch gradient descent; writes the validation predictions to preds.npy."""

import argparse

import model
import numpy as np
from data import load

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--epochs", type=int, default=500)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

x_train, y_train, x_val, y_val = load()
params = model.init(x_train.shape[1], args.seed)
for _ in range(args.epochs):
    model.step(params, x_train, y_train, args.lr)
np.save("preds.npy", model.forward(params, x_val)[0])
print(f"train_mse: {np.mean((model.forward(params, x_train)[0] - y_train) ** 2):.4f}")
