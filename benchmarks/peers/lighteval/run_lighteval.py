"""LightEval on multiple-choice items agentlab exported, offline, on a local transformers model.

Run by the python of LightEval's own environment (never agentlab's: it imports nothing from agentlab; see README.md
beside this file for the venv):

    benchmarks/peers/lighteval/.venv/bin/python benchmarks/peers/lighteval/run_lighteval.py \
        --model MODEL_DIR --items ITEMS_DIR --out lighteval.json

``ITEMS_DIR/<task>.jsonl`` holds one item a line: ``{"query": ..., "choices": [...], "gold": N}``, the context and
continuations exactly as lm-eval sent them (``benchmarks/peers/lighteval_vs_lmeval.py`` writes them from lm-eval's
samples). Each file becomes a LightEval custom task (``LightevalTaskConfig``, ``loglikelihood_acc``) whose dataset is
a local folder, and LightEval's ``Pipeline`` scores it with its transformers backend on the CPU, no chat template.

LightEval 0.13.0 does not run offline as shipped (README.md has the errors): building its task ``Registry`` imports
every bundled task module, and ``tasks/tasks/tiny_benchmarks.py`` downloads ``tinyBenchmarks.pkl`` from GitHub at
import time. Here the registry reads the custom task file only (``Registry.load_all_task_configs`` replaced; nothing
else of LightEval is touched). Its details logger hashes ``str`` with xxhash, which xxhash >= 4 refuses: the venv
pins ``xxhash<4``.

Prints nothing on stdout; writes ``--out``: per task the accuracy LightEval reports, and per item its per-choice
log-likelihoods and the choice it picked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

TASK_MODULE = '''
from pathlib import Path

from lighteval.metrics.metrics import Metrics
from lighteval.tasks.lighteval_task import LightevalTaskConfig
from lighteval.tasks.requests import Doc

ITEMS = Path({items!r})


def prompt(line, task_name=None):
    return Doc(task_name=task_name, query=line["query"], choices=list(line["choices"]), gold_index=int(line["gold"]))


TASKS_TABLE = [
    LightevalTaskConfig(name=folder.name, prompt_function=prompt, hf_repo=str(folder), hf_subset="default",
                        hf_avail_splits=["test"], evaluation_splits=["test"], few_shots_split=None,
                        few_shots_select=None, metrics=[Metrics.loglikelihood_acc])
    for folder in sorted(ITEMS.iterdir())
]
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a transformers model folder")
    parser.add_argument("--items", required=True, type=Path, help="folder of <task>.jsonl items")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"  # no hub at run time: a download attempt fails instead of hanging

    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.models.transformers.transformers_model import TransformersModelConfig
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters
    from lighteval.tasks.registry import Registry

    tasks = sorted(p.stem for p in args.items.glob("*.jsonl"))
    if not tasks:
        print(f"error: no <task>.jsonl in {args.items}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for task in tasks:  # one dataset folder per task: datasets reads a local folder's test.jsonl offline
            (data / task).mkdir(parents=True)
            (data / task / "test.jsonl").write_text((args.items / f"{task}.jsonl").read_text())
        module = Path(tmp) / "agentlab_items.py"
        module.write_text(TASK_MODULE.format(items=str(data)))

        def custom_only(custom_tasks: Any = None, load_multilingual: bool = False) -> dict[str, Any]:
            return Registry._extract_configs(Registry.create_custom_tasks_module(custom_tasks))

        Registry.load_all_task_configs = staticmethod(custom_only)  # see the module docstring
        tracker = EvaluationTracker(output_dir=str(Path(tmp) / "out"), save_details=False)
        params = PipelineParameters(launcher_type=ParallelismManager.NONE, custom_tasks_directory=str(module))
        config = TransformersModelConfig(model_name=str(args.model), batch_size=args.batch_size, device="cpu",
                                         override_chat_template=False)
        pipeline = Pipeline(tasks=",".join(f"{t}|0" for t in tasks), pipeline_parameters=params,
                            evaluation_tracker=tracker, model_config=config)
        pipeline.evaluate()
        scores = pipeline.get_results()["results"]
        details = tracker.details_logger.details
        out: dict[str, Any] = {}
        for task in tasks:
            def ours(key: str, task: str = task) -> bool:  # "<task>:0" in scores, "<task>|0" in details
                return key.split("|")[0].split(":")[0] == task

            score = next(v for k, v in scores.items() if ours(k))
            items = [{"query": d.doc.query, "logprobs": [float(x) for x in d.model_response.logprobs],
                      "gold": d.doc.gold_index} for k, rows in details.items() if ours(k) for d in rows]
            out[task] = {"acc": score["acc"], "n": len(items), "items": items}
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
