"""Two interleaved spirals, a one-hidden-layer network in numpy: a training script that reads its own config.py.

    python train.py

It prints one line per epoch (``epoch 3: val_loss=0.41 val_acc=0.83``) and a final line
(``val_loss: 0.38 val_acc: 0.85``); agentlab reads those lines, nothing else.
"""

from __future__ import annotations

import config
import numpy as np


def spirals(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 1, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * np.pi)
    return x + rng.normal(0, noise / 3, x.shape), label.astype(float)


def act(z: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The activation and its derivative."""
    if kind == "relu":
        return np.maximum(z, 0), (z > 0).astype(float)
    a = np.tanh(z)
    return a, 1 - a ** 2


def main() -> None:
    rng = np.random.default_rng(config.SEED)
    x, y = spirals(int(config.data["samples"]), float(config.data["noise"]), rng)
    cut = len(x) * 4 // 5
    xt, yt, xv, yv = x[:cut], y[:cut], x[cut:], y[cut:]
    hidden, kind = int(config.model["hidden"]), config.model["activation"]
    lr, l2, batch = float(config.training["lr"]), float(config.training["l2"]), int(config.training["batch_size"])
    w1 = rng.normal(0, 1, (2, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(0, 1 / np.sqrt(hidden), hidden)
    b2 = 0.0

    def forward(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, dh = act(inputs @ w1 + b1, kind)
        p = 1 / (1 + np.exp(-np.clip(h @ w2 + b2, -30, 30)))
        return p, h, dh

    def loss_acc(inputs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        p = np.clip(forward(inputs)[0], 1e-7, 1 - 1e-7)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))), float(np.mean((p > 0.5) == labels))

    for epoch in range(1, int(config.training["epochs"]) + 1):
        order = rng.permutation(cut)
        for start in range(0, cut, batch):
            idx = order[start:start + batch]
            p, h, dh = forward(xt[idx])
            g = (p - yt[idx]) / len(idx)
            gh = np.outer(g, w2) * dh
            w2 -= lr * (h.T @ g + l2 * w2)
            b2 -= lr * g.sum()
            w1 -= lr * (xt[idx].T @ gh + l2 * w1)
            b1 -= lr * gh.sum(axis=0)
        val_loss, val_acc = loss_acc(xv, yv)
        print(f"epoch {epoch}: val_loss={val_loss:.4f} val_acc={val_acc:.3f}", flush=True)
    print(f"val_loss: {val_loss:.4f} val_acc: {val_acc:.3f}")


if __name__ == "__main__":
    main()
