"""Ridge regression on random Fourier features, in numpy: an argparse script that prints its result as text.

    python train.py --lr 0.05 --features 64 --alpha 0.001 --epochs 30

Every setting is a flag with a default; it prints ``step N: val_rmse=...`` as it trains and ``final val_rmse: 0.21``
at the end. agentlab passes the trial's values as flags ({args} in nas.yaml) and reads the printed lines.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.01, help="gradient step size")
    parser.add_argument("--features", type=int, default=16, help="random Fourier features")
    parser.add_argument("--scale", type=float, default=1.0, help="frequency scale of the features")
    parser.add_argument("--alpha", type=float, default=0.01, help="L2 penalty")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-3, 3, (2000, 3))
    y = np.sin(2 * x[:, 0]) + 0.5 * np.cos(3 * x[:, 1]) * x[:, 2] + rng.normal(0, 0.1, len(x))
    freq = rng.normal(0, args.scale, (3, args.features))
    phase = rng.uniform(0, 2 * np.pi, args.features)
    phi = np.sqrt(2 / args.features) * np.cos(x @ freq + phase)
    cut = 1600
    w = np.zeros(args.features)
    for epoch in range(1, args.epochs + 1):
        for start in range(0, cut, 50):
            rows = slice(start, start + 50)
            grad = phi[rows].T @ (phi[rows] @ w - y[rows]) / 50 + args.alpha * w
            w -= args.lr * grad
        rmse = float(np.sqrt(np.mean((phi[cut:] @ w - y[cut:]) ** 2)))
        print(f"step {epoch}: val_rmse={rmse:.4f}", flush=True)
    print(f"final val_rmse: {rmse:.4f}")


if __name__ == "__main__":
    main()
