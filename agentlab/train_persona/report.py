"""What train-persona writes for people: the adapter card (README.md beside the weights), the run's report.md and
its loss curve."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from agentlab.core.files import counted
from agentlab.core.gpu import describe as describe_gpu
from agentlab.core.runs import save_figure
from agentlab.train_persona.config import TrainPersonaConfig


def loss_line(summary: dict[str, Any]) -> str:
    """Which tokens carry the loss, in one line without brackets inside brackets (``LossSummary.to_dict()``):
    ``loss on 1069 of 9207 tokens (11.6%), assistant tokens only, marked by <template>; 240 conversations``."""
    tokens, loss_tokens = summary["tokens"], summary["loss_tokens"]
    share = f" ({loss_tokens / tokens:.1%})" if tokens else ""
    what = f"assistant tokens only, marked by {summary['template']}" if summary["assistant_only"] else "every token"
    examples, sequences = summary["examples"], summary["sequences"]
    if summary["packing"]:
        rows = f", packed into {sequences} rows"
    elif sequences < examples:
        rows = f", {sequences} trained on; {examples - sequences} left out: no loss token within max_length"
    else:
        rows = ""
    return f"loss on {loss_tokens} of {tokens} tokens{share}, {what}; {counted(examples, 'conversation')}{rows}"


def _hyper(cfg: TrainPersonaConfig) -> list[str]:
    t, lora = cfg.train, cfg.lora
    return [
        f"- LoRA: r {lora.r}, alpha {lora.alpha or 2 * lora.r}, dropout {lora.dropout}, targets {lora.target_modules}",
        f"- training: {t.epochs} epoch(s)" + (f", at most {t.max_steps} steps" if t.max_steps else "")
        + f", batch {t.batch_size} x {t.grad_accum} accumulation, learning rate {t.learning_rate} (cosine, "
        f"{t.warmup_ratio:.0%} warm-up), weight decay {t.weight_decay}, seed {t.seed}",
        f"- data: max_length {cfg.data.max_length}, packing {'on' if cfg.data.packing else 'off'}, "
        f"loss on {'assistant tokens only' if t.assistant_only_loss else 'every token'}",
    ]


def adapter_card(cfg: TrainPersonaConfig, results: dict[str, Any]) -> str:
    """README.md of the adapter folder: enough to know what it is and to reproduce it."""
    data = results["data"]
    lines = [
        f"# {Path(results['adapter']).name}: a persona LoRA adapter", "",
        f"Trained by `agentlab train-persona` on `{cfg.base_model}`"
        + (" with QLoRA (4-bit NF4 base)." if results["qlora"] else f" ({results['device']}, LoRA)."), "",
        "Load it with PEFT:", "", "```python", "from peft import PeftModel",
        f"model = PeftModel.from_pretrained(base_model, \"{results['adapter']}\")", "```", "",
        "## Data", "",
        f"- file: `{data['file']}`", f"- sha256: `{data['sha256']}`",
        f"- rows: {counted(data['conversations'], 'conversation')}, {counted(data['turns'], 'turn')}, "
        f"{counted(data['tokens'], 'token')} "
        f"({data['truncated']} truncated)", "",
        "## Training", "", *_hyper(cfg),
        f"- {results['steps']} steps, {results['tokens_seen']:,} tokens seen, {results['seconds']:.0f} s",
        f"- loss: {_num(results['first_loss'])} at the first logged step, {_num(results['final_loss'])} at the last "
        f"(mean over training {_num(results['train_loss'])})",
        f"- {results['loss_tokens']['line']}", "",
    ]
    return "\n".join(lines)


def render_report(cfg: TrainPersonaConfig, results: dict[str, Any], preview: str) -> str:
    """report.md of the run: the outcome, the loss curve, which tokens carried the loss."""
    resumed = f" (resumed from {Path(results['resumed_from']).name})" if results["resumed_from"] else ""
    lines = [
        f"# train-persona `{cfg.name}`", "",
        f"Adapter: `{results['adapter']}` on `{cfg.base_model}` ({results['device']}, "
        f"{'QLoRA' if results['qlora'] else 'LoRA'}){resumed}.", "",
        "| steps | tokens seen | tokens/s | first loss | final loss | seconds"
        + (" (this session) |" if resumed else " |"), "|---|---|---|---|---|---|",
        f"| {results['steps']} | {results['tokens_seen']:,} | {_num(results['tokens_per_s'], '.0f')} | "
        f"{_num(results['first_loss'])} | {_num(results['final_loss'])} | {results['seconds']:.0f} |", "",
        *(["**The adapter changes nothing**: every lora_B is still zero (train more steps, or with a higher learning "
           "rate).", ""] if results.get("changes_nothing") else []),
        *_memory_lines(results),
        "![loss](loss.png)", "", "## Settings", "", *_hyper(cfg), "",
        "## Which tokens carried the loss", "", results["loss_tokens"]["line"] + ".", "",
        "The start of the first training row, loss tokens inside `[[...]]`:", "", "```text", preview, "```", "",
    ]
    return "\n".join(lines)


def eval_lines(scored: Any, adapter: str) -> list[str]:
    """``--eval``'s Markdown: the base and the adapter on each task metric, and the paired difference."""
    lines = [f"`{adapter}` against its base on the same items (lm-eval; stderr after ±; the difference is paired):",
             "", "| task | metric | base | adapter | adapter - base |", "|---|---|---|---|---|"]
    base = {(s.task, s.metric, s.filter): s for s in scored.rows["base"]}
    pairs = {(p.task, p.metric, p.filter): p for p in scored.paired.get(adapter, [])}
    for s in scored.rows[adapter]:
        key = (s.task, s.metric, s.filter)
        b, p = base.get(key), pairs.get(key)
        diff = "-" if p is None else f"{p.diff:+.3f}" + (f" ± {p.stderr:.3f}" if p.stderr is not None else "")
        lines.append(f"| {s.task} | {s.metric} | {_score(b)} | {_score(s)} | {diff} |")
    return lines


def _score(score: Any) -> str:
    if score is None:
        return "-"
    return f"{score.value:.3f}" + (f" ± {score.stderr:.3f}" if score.stderr is not None else "")


def loss_plot(losses: list[tuple[float, float]], path: Path) -> None:
    """The training loss per logged step; a NaN or inf loss (Trainer's filter is off) is left out, not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(s, v) for s, v in losses if isinstance(v, (int, float)) and math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if losses:
        ax.plot([s for s, _ in losses], [v for _, v in losses], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("train-persona: loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _memory_lines(results: dict[str, Any]) -> list[str]:
    """Peak RSS of the process and the GPU figures of training ("no GPU" on a CPU machine); none for a results.json
    written before they were recorded."""
    if "gpu" not in results:
        return []
    return [f"Memory: peak RSS {results['peak_rss_mb']:.0f} MB; GPU: {describe_gpu(results)}.", ""]
