"""agentlab evolve: search over blends of LoRA adapters (CMA-ES, the genetic algorithm, random search and the merge
baselines: uniform, task arithmetic, TIES). Children are exact blends of the seeds (``core/train/blend.py``); each is
scored once on the real model (the per-token log-likelihood of gold answers, greedy accuracy, optionally cooperation
in a debate of the seeds) and by novelty; the population lives in an Optuna store that workers can share.

Importing this package is light (no torch): models load when scoring starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.core.config import load_config
from agentlab.core.runs import check_resume_settings, resume_target, run_in_folder
from agentlab.evolve.config import EvolveConfig
from agentlab.evolve.run import check_resume, prepare, run

__all__ = ["EvolveConfig", "prepare", "run", "run_evolution"]


def run_evolution(cfg: EvolveConfig | dict[str, Any] | str | Path | None = None, *, out: str | Path | None = None,
                  resume: str | Path | None = None) -> dict[str, Any]:
    """One call for notebooks: validate ``cfg`` (a config file such as configs/evolve.yaml, a dict of its fields or
    an ``EvolveConfig``; a bad field is a ``ConfigError`` naming it, as ``-c`` gives), check the seeds and the task,
    run (or resume) in a run folder and return the results (``results.json``'s content). ``resume`` without ``cfg``
    continues the run with its own settings (its config.yaml); with ``cfg``, settings a resume cannot change are
    refused (``UsageError``)."""
    folder = resume_target("evolve", resume, out=out, option="resume=") if resume else None
    if folder is not None and cfg is None:
        config = load_config(folder / "config.yaml", EvolveConfig, schema="evolve")
    elif isinstance(cfg, EvolveConfig):
        config = cfg
    elif cfg is None or isinstance(cfg, dict):
        config = load_config(None, EvolveConfig, base=cfg, schema="evolve")
    else:
        config = load_config(cfg, EvolveConfig, schema="evolve")
    if folder is not None:  # before prepare loads the model
        check_resume_settings(folder, config, "evolve")
        check_resume(config, folder)
    result, _ = run_in_folder("evolve", config, run, inputs=prepare(config, resuming=folder is not None), out=out,
                              resume=folder)
    return result  # type: ignore[no-any-return,unused-ignore]
