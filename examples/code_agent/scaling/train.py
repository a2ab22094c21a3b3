"""Linear regression by gradient descent; writes the validation predictions to preds.npy."""

import argparse

import numpy as np
from data import load

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=1000)
parser.add_argument("--clip", type=float, default=1.0, help="the update's norm is clipped to this")
args = parser.parse_args()

x_train, y_train, x_val, y_val = load()
w = np.zeros(x_train.shape[1])
b = 0.0
for epoch in range(args.epochs):
    err = x_train @ w + b - y_train
    grad_w, grad_b = 2 * x_train.T @ err / len(y_train), 2 * err.mean()
    norm = np.sqrt((grad_w ** 2).sum() + grad_b ** 2)
    if norm > args.clip:  # a safeguard against divergence
        grad_w, grad_b = grad_w * args.clip / norm, grad_b * args.clip / norm
    w -= args.lr * grad_w
    b -= args.lr * grad_b
    if not np.isfinite(w).all():
        raise SystemExit(f"diverged at epoch {epoch} (lr {args.lr})")
np.save("preds.npy", x_val @ w + b)
print(f"train_mse: {np.mean((x_train @ w + b - y_train) ** 2):.4f}")
