"""Which play is this line from? A small PyTorch classifier, written the way a user writes their own training script.

It knows nothing about agentlab: it reads its settings from a JSON file (``--params``), trains, and prints one JSON
line per epoch and a final one. agentlab only reads those lines.

    python train.py --params params.json --text-dir ../../../shared/data/text

Data: the lines of the plays (one ``*.txt`` file per class) in ``--text-dir``; without that folder, a synthetic
stand-in (three made-up "authors" with different letter habits), so the script runs anywhere.
Model: a bag of hashed words and character bigrams -> an MLP (``width``, ``dropout``) -> one logit per play, trained
with AdamW (``lr``) for ``epochs`` epochs; the validation loss and accuracy are on a held-out fifth of the lines.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from pathlib import Path

import torch
from torch import nn

DEFAULTS = {"lr": 0.01, "width": 16, "epochs": 5, "dropout": 0.1, "batch_size": 256, "seed": 0, "buckets": 2048}


def read_lines(text_dir: Path | None, seed: int) -> tuple[list[str], list[int], list[str]]:
    """(lines, labels, class names): the plays' lines of at least 20 characters, or the synthetic stand-in."""
    files = sorted(text_dir.glob("*.txt")) if text_dir is not None and text_dir.is_dir() else []
    if len(files) >= 2:
        lines, labels = [], []
        for label, path in enumerate(files):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if len(line.strip()) >= 20:
                    lines.append(line.strip().lower())
                    labels.append(label)
        return lines, labels, [p.stem for p in files]
    print(f"no plays in {text_dir}: using synthetic lines", file=sys.stderr)
    rng = random.Random(seed)
    habits = ["aeiou tnrs", "etaoin shrdl", "zyxwvq ujkm"]
    lines = ["".join(rng.choice(habits[k] + "abcdefghij ") for _ in range(40)) for k in range(3) for _ in range(1500)]
    return lines, [k for k in range(3) for _ in range(1500)], ["a", "b", "c"]


def featurise(lines: list[str], buckets: int) -> torch.Tensor:
    """log(1 + count) of the hashed words and character bigrams of each line (a stable hash: not ``hash()``,
    which changes with every process)."""
    rows, cols = [], []
    for i, line in enumerate(lines):
        tokens = line.split() + [line[j:j + 2] for j in range(len(line) - 1)]
        cols += [zlib.crc32(token.encode()) % buckets for token in tokens]
        rows += [i] * len(tokens)
    x = torch.zeros(len(lines), buckets)
    x.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.ones(len(rows)), accumulate=True)
    return torch.log1p(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, help="JSON file of settings (missing keys take their defaults)")
    parser.add_argument("--text-dir", type=Path, default=None, help="a folder of plays, one .txt file per class")
    args = parser.parse_args()
    p = {**DEFAULTS, **(json.loads(args.params.read_text()) if args.params else {})}
    torch.manual_seed(p["seed"])
    torch.set_num_threads(1)
    start = time.perf_counter()
    lines, labels, names = read_lines(args.text_dir, p["seed"])
    order = list(range(len(lines)))
    random.Random(p["seed"]).shuffle(order)
    x, y = featurise([lines[i] for i in order], p["buckets"]), torch.tensor([labels[i] for i in order])
    cut = len(order) * 4 // 5
    model = nn.Sequential(nn.Linear(p["buckets"], p["width"]), nn.ReLU(), nn.Dropout(p["dropout"]),
                          nn.Linear(p["width"], len(names)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=p["lr"])
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, int(p["epochs"]) + 1):
        model.train()
        for batch in torch.randperm(cut).split(int(p["batch_size"])):
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x[cut:])
            val_loss = loss_fn(logits, y[cut:]).item()
            accuracy = (logits.argmax(dim=1) == y[cut:]).float().mean().item()
        print(json.dumps({"step": epoch, "val_loss": round(val_loss, 5), "accuracy": round(accuracy, 4)}), flush=True)
    print(json.dumps({"val_loss": round(val_loss, 5), "accuracy": round(accuracy, 4), "classes": len(names),
                      "lines": len(lines), "seconds": round(time.perf_counter() - start, 2)}))


if __name__ == "__main__":
    main()
