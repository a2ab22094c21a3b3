"""`agentlab debate` through the CLI: routed agents over a loopback OpenAI-compatible server (one model name per
persona, as vLLM serves LoRAs), tiny LoRA adapters on a tiny local model in process (the dry run writes nothing),
and bad input stopped with one line and exit 2."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import pytest
from scripted_pair import SCRIPTED, TWO, scripted, snapshot

from agentlab.cli import main
from agentlab.testing.server import Reply, ScriptedServer

REPO = Path(__file__).resolve().parents[2]
DEBATE_YAML = """# agentlab debate -c debate.yaml
topic: What is 3 times 4?
rounds: 1
rule: last_round
agents:
  - {model: persona_a}
  - {model: persona_b}
  - {model: persona_c}
"""


def only_run(root: Path, command: str = "debate") -> Path:
    (run,) = (root / "runs" / command).iterdir()
    return run


def test_routed_personas_over_http_end_to_end(in_tmp: Path, srv: ScriptedServer) -> None:
    (in_tmp / "llm.yaml").write_text(
        f"providers:\n  vllm: {{kind: openai, base_url: '{srv.base_url}'}}\nmodels:\n"
        + "".join(f"  persona_{x}: {{provider: vllm, model: persona_{x}}}\n" for x in "abc"))
    (in_tmp / "debate.yaml").write_text(DEBATE_YAML)
    srv.default("persona_a", Reply(text="12."))
    srv.default("persona_b", Reply(text="3 times 4 is 3 added four times: 12.\nConfidence: 90%"))
    srv.default("persona_c", Reply(text="Arr, that be 13, matey!"))
    assert main(["debate", "-c", "debate.yaml", "--llm", "llm.yaml"]) == 0
    run = only_run(in_tmp)
    transcript = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    assert [(t["round"], t["agent"], t["answer"]) for t in transcript] == [
        (r, f"persona_{x}", a) for r in (0, 1) for x, a in zip("abc", ("12", "12", "13"), strict=True)]
    assert all(t["completion_tokens"] > 0 and t["seconds"] >= 0 for t in transcript)
    results = json.loads((run / "results.json").read_text())
    assert results["final"]["answer"] == "12" and results["per_round"][1]["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert {"report.md", "agreement.png", "config.yaml", "llm_calls.jsonl"} <= {p.name for p in run.iterdir()}
    assert srv.count("persona_a") == 2  # no judge for a numeric question under the vote
    assert main(["config", "validate", str(run / "config.yaml")]) == 0


def test_a_debate_whose_every_call_failed_exits_1_with_the_error(in_tmp: Path, srv: ScriptedServer,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """No server behind the agents: one line naming the first failure, exit 1, never "no parseable answer" and 0;
    a debate that decided despite a failed call still ends 0 (the summary counts the failures). Round 0 failed
    for every agent, so round 1 is not asked."""
    (in_tmp / "llm.yaml").write_text(
        "providers:\n  vllm: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}\nmodels:\n"
        + "".join(f"  persona_{x}: {{provider: vllm, model: persona_{x}}}\n" for x in "abc") + "retries: 0\n")
    (in_tmp / "debate.yaml").write_text(DEBATE_YAML)
    assert main(["debate", "-c", "debate.yaml", "--llm", "llm.yaml", "--out", "d"]) == 1
    err = capsys.readouterr().err
    assert "final answer (reconcile, rule last_round): none (all 3 calls failed; the first: route " in err
    assert "connection" in err and "no agent gave a parseable answer" not in err
    assert json.loads((in_tmp / "d" / "results.json").read_text())["first_error"].startswith("route ")
    # run.json says it failed, as the exit code does (it said completed), and why; a resume that fails again too
    for resumed in (False, True):
        if resumed:
            assert main(["debate", "--resume", "d", "--json"]) == 1
            assert json.loads(capsys.readouterr().out)["final"]["answer"] is None
        info = json.loads((in_tmp / "d" / "run.json").read_text())
        assert info["status"] == "failed" and "no final answer: all 3 calls failed" in info["error"], info


def test_shipped_configs_validate() -> None:
    for name in ("debate.yaml", "debate.http.yaml", "llm.debate.yaml"):
        assert main(["config", "validate", str(REPO / "configs" / name)]) == 0


def test_the_shipped_http_config_runs(in_tmp: Path) -> None:
    """debate.http.yaml as debate.md runs it (its models here scripted): it once set a judge its own decision rule
    never asks, which `debate` refuses."""
    (in_tmp / "llm.yaml").write_text("providers:\n  p: {kind: scripted}\nmodels:\n" + "".join(
        f"  {name}: {{provider: p, model: {name}}}\n" for name in ("persona_a", "persona_b", "persona_c", "base")))
    assert main(["debate", "-c", str(REPO / "configs" / "debate.http.yaml"), "--llm", "llm.yaml", "--out", "d"]) == 0


def test_the_shipped_http_config_is_judged_by_the_base_model_as_in_process() -> None:
    """Over HTTP the judge was the routing config's first model, persona_a (a debater), while in process it is the
    base model without adapter; debate.http.yaml cannot set `judge: base` (refused where no judge is asked)."""
    from agentlab.core.config import load_config
    from agentlab.debate import DebateConfig, prepare
    from agentlab.debate.agents import JUDGE_ROUTE

    cfg = load_config(REPO / "configs" / "debate.http.yaml", DebateConfig,
                      [f"llm={REPO / 'configs' / 'llm.debate.yaml'}"], schema="debate")
    panel = prepare(cfg)["panel"]
    assert panel.llm.routes[JUDGE_ROUTE].chain() == ["base"], panel.judge_source
    assert panel.llm.models["base"].model == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def adapters(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny LoRA adapters (random B, so they change the output) on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(("persona_a", "persona_c")):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model["hf"]),
                               LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        model.save_pretrained(str(root / name))
    return root


def test_adapters_in_process_end_to_end_and_dry_run(in_tmp: Path, tiny_model: dict[str, Path], adapters: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    args = ["debate", "--base-model", str(tiny_model["hf"]), "--adapters", str(adapters / "persona_a"),
            "--adapters", str(adapters / "persona_c"), "--topic", "What is 2 plus 2?", "--set", "max_tokens=6",
            "--rule", "last_round"]
    assert main([*args, "--rounds", "0"]) == 0
    err = capsys.readouterr().err
    assert "OK   persona_a" in err and "OK   persona_c" in err and "OK   judge" in err
    assert not (in_tmp / "runs").exists()
    # a routing config none of whose models this debate would use is said, not ignored (its settings still apply)
    (in_tmp / "llm.yaml").write_text("providers:\n  s: {kind: scripted}\nmodels:\n  m: {provider: s, model: m}\n")
    assert main([*args, "--rounds", "0", "--llm", "llm.yaml"]) == 0
    assert "--llm: no model of it answers: every agent is an adapter" in " ".join(capsys.readouterr().err.split())
    assert main([*args, "--rounds", "1", "--decision", "judge"]) == 0
    run = only_run(in_tmp)
    transcript = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    assert [(t["round"], t["agent"]) for t in transcript] == [(0, "persona_a"), (0, "persona_c"),
                                                              (1, "persona_a"), (1, "persona_c")]
    assert all(t["completion_tokens"] > 0 for t in transcript)
    results = json.loads((run / "results.json").read_text())
    assert results["judge_reply"] is not None and results["decision"] == "judge"
    assert results["answers"] == 4 and results["errors"] == 0 and results["prompt_style"] == "plain"
    assert transcript[0]["text"] is not None


def test_default_personas_partly_trained_are_warned_about(in_tmp: Path, tiny_model: dict[str, Path], adapters: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """Only adapters/persona_a trained: `debate` ran a one-agent "debate" without a word. The missing default personas
    are named with their train-persona lines, and a lone agent is said to be no debate; agents given stay as given."""
    shutil.copytree(adapters / "persona_a", in_tmp / "adapters" / "persona_a")
    args = ["debate", "--base-model", str(tiny_model["hf"]), "--topic", "What is 7 times 8?", "--rounds", "0",
            "--set", "max_tokens=4"]
    assert main(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: only 1 of the default personas found (adapters/persona_a)" in err, err
    assert "adapters/persona_b, adapters/persona_c not found: this is not a debate" in err
    assert "agentlab train-persona --data persona_b --out adapters/persona_b" in err
    assert "agentlab train-persona --data persona_c --out adapters/persona_c" in err
    shutil.copytree(adapters / "persona_c", in_tmp / "adapters" / "persona_c")
    assert main(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "adapters/persona_b not found" in err and "--data persona_b" in err, err
    assert "not a debate" not in err and "--data persona_c" not in err
    assert main([*args, "--adapters", "adapters/persona_a"]) == 0  # given: no warning
    assert "default personas" not in capsys.readouterr().err


def test_eval_rounds_0_is_the_dry_run_its_help_promises(in_tmp: Path, srv: ScriptedServer,
                                                       capsys: pytest.CaptureFixture) -> None:
    """`debate eval --rounds 0` ran the whole eval and wrote a run folder; it is the dry run, as for `debate`: each
    agent answers one short question (the judge too only where the eval asks one), nothing written."""
    routed(in_tmp, srv)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n' * 3)
    args = ["debate", "eval", "--task", "task.jsonl", "--rounds", "0", "--llm", "llm.yaml", "--set",
            "agents=[{model: persona_a}, {model: persona_b}]"]
    assert main(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "OK persona_a" in err and "OK persona_b" in err and "judge" not in err
    assert "dry run: 2/2 answered; nothing written" in err and not (in_tmp / "runs").exists()
    assert srv.count("persona_a") == 1
    assert main([*args, "--decision", "judge", "--judge", "persona_c"]) == 0
    assert "OK judge" in " ".join(capsys.readouterr().err.split()) and srv.count("persona_c") == 1
    assert not (in_tmp / "runs").exists()


def test_an_adapter_trained_on_another_base_is_refused_before_loading(in_tmp: Path, tiny_model: dict[str, Path],
                                                                      adapters: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """An adapter whose adapter_config.json names another model than --base-model ran on it, OK and exit 0; evolve
    refuses such a mix: so does debate, with one line, before any model loads. The same model at another path (a
    copy, its GGUF) is the same base."""
    from agentlab.core.train.tiny import make_tiny

    other = shutil.copytree(adapters / "persona_c", in_tmp / "q_a")
    make_tiny(in_tmp / "tiny-q", arch="qwen2")  # another architecture: not the base the adapter agents run on
    config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "tiny-q"}))
    args = ["debate", "--topic", "What is 2 plus 2?", "--rounds", "0", "--base-model", str(tiny_model["hf"]),
            "--adapters", str(adapters / "persona_a"), "--adapters", "q_a"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: q_a: base model 'tiny-q' differs from base_model '{tiny_model['hf']}'" in err, err
    assert "--base-model tiny-q" in err and "OK" not in err and "Traceback" not in err
    assert main([*args[:5], "--base-model", "tiny-q", "--adapters", "q_a"]) == 0  # on its own base it runs
    shutil.copytree(tiny_model["hf"], in_tmp / "copy")  # the same model elsewhere, and as its GGUF: it runs
    (other / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "copy"}))
    for base in (str(tiny_model["hf"]), str(tiny_model["gguf"])):
        assert main([*args[:5], "--base-model", base, "--adapters", "q_a"]) == 0, capsys.readouterr().err


def test_eval_through_the_cli_with_make_task(in_tmp: Path, srv: ScriptedServer) -> None:
    (in_tmp / "llm.yaml").write_text(
        f"providers:\n  vllm: {{kind: openai, base_url: '{srv.base_url}'}}\nmodels:\n"
        "  persona_a: {provider: vllm, model: persona_a}\n")
    assert main(["debate", "make-task", "--n", "3", "--difficulty", "easy", "--out", "task.jsonl"]) == 0
    rows = [json.loads(line) for line in (in_tmp / "task.jsonl").read_text().splitlines()]
    assert all(eval(r["question"].split()[-1].rstrip("?")) == int(r["answer"]) for r in rows)
    srv.default("persona_a", Reply(text="I cannot say."))
    assert main(["debate", "eval", "--task", "task.jsonl", "--llm", "llm.yaml", "--rounds", "1",
                 "--set", "agents=[{model: persona_a}]", "--json"]) == 0
    results = json.loads((only_run(in_tmp, "debate-eval") / "results.json").read_text())
    assert all(r["correct"] == 0 and r["unparsed"] == 3 and r["total"] == 3 for r in results["table"])


def routed(in_tmp: Path, srv: ScriptedServer) -> None:
    (in_tmp / "llm.yaml").write_text(
        f"providers:\n  vllm: {{kind: openai, base_url: '{srv.base_url}'}}\nmodels:\n"
        + "".join(f"  persona_{x}: {{provider: vllm, model: persona_{x}}}\n" for x in "abc"))
    for x in "abc":
        srv.default(f"persona_{x}", Reply(text="12."))


@pytest.mark.parametrize("given, rounds, rule", [([], 0, "vote"), (["--rounds", "2"], 2, "keep_round0"),
                                                 (["--rounds", "1", "--rule", "last_round"], 1, "last_round"),
                                                 (["--rule", "all_rounds"], 3, "all_rounds")])
def test_rounds_act_the_default_asks_the_rules_own(given: list[str], rounds: int, rule: str, in_tmp: Path,
                                                   srv: ScriptedServer, capsys: pytest.CaptureFixture) -> None:
    routed(in_tmp, srv)
    agents = "agents=[{model: persona_a}, {model: persona_b}, {model: persona_c}]"
    assert main(["debate", "--topic", "What is 3 times 4?", "--llm", "llm.yaml", "--set", agents, *given]) == 0
    run = only_run(in_tmp)
    transcript = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    assert sorted({t["round"] for t in transcript}) == list(range(rounds + 1)) and srv.count("persona_a") == rounds + 1
    results = json.loads((run / "results.json").read_text())
    assert (results["rounds"], results["rule"], results["final"]["rule"]) == (rounds, rule, rule)
    out = " ".join(capsys.readouterr().err.split())  # the console is stderr
    assert ("best debating rule measured" in out) == (given == ["--rounds", "2"])
    assert f"rule {rule}" in out


def test_rounds_with_the_vote_rule_is_refused(in_tmp: Path, srv: ScriptedServer,
                                               capsys: pytest.CaptureFixture) -> None:
    routed(in_tmp, srv)
    assert main(["debate", "--topic", "q", "--llm", "llm.yaml", "--set", "agents=[{model: persona_a}]",
                 "--rounds", "2", "--rule", "vote"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "rule vote decides on round 0 alone" in err and "--rule keep_round0" in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("args, says", [
    (["debate", "--topic", "What is 3 times 4?"], "this numeric question is decided by the reconcile vote"),
    (["debate", "--topic", "Name the capital of France", "--set", "kind=text", "--decision", "majority"],
     "this text question is decided by the majority vote"),
    (["debate", "eval", "--task", "task.jsonl"], "`debate eval` asks a judge only with decision judge"),
])
def test_a_judge_that_would_never_be_asked_is_refused(args: list[str], says: str, in_tmp: Path, srv: ScriptedServer,
                                                      capsys: pytest.CaptureFixture) -> None:
    routed(in_tmp, srv)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    agents = ["--llm", "llm.yaml", "--set", "agents=[{model: persona_a}, {model: persona_b}]"]
    assert main([*args, *agents, "--judge", "persona_c"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "judge: 'persona_c' would never be asked" in err and says in err and "--decision judge" in err, err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert not (in_tmp / "runs").exists() and srv.count("persona_c") == 0


def test_a_judge_is_accepted_where_it_is_asked(in_tmp: Path, srv: ScriptedServer) -> None:
    """The same --judge on an open topic (it sums up) and with --decision judge (it decides) runs and is asked."""
    routed(in_tmp, srv)
    srv.default("persona_c", Reply(text="Answer: 12\nConfidence: 90%"))
    agents = ["--llm", "llm.yaml", "--set", "agents=[{model: persona_a}, {model: persona_b}]", "--judge", "persona_c"]
    assert main(["debate", "--topic", "What is 3 times 4?", "--decision", "judge", *agents]) == 0
    assert srv.count("persona_c") == 1


def test_a_judge_without_a_parseable_answer_is_said_to_be_overruled(in_tmp: Path, srv: ScriptedServer,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """The agents' vote decides when the judge's verdict cannot be read: the console says so (only report.md and
    results.json did), naming the rule that decided."""
    routed(in_tmp, srv)
    srv.default("persona_c", Reply(text="Hmm, hard to say."))
    agents = ["--llm", "llm.yaml", "--set", "agents=[{model: persona_a}, {model: persona_b}]", "--judge", "persona_c"]
    assert main(["debate", "--topic", "What is 3 times 4?", "--decision", "judge", "--rounds", "1",
                 "--rule", "last_round", *agents]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "the judge gave no parseable answer; the reconcile vote (rule last_round) decided" in err, err


@pytest.mark.parametrize("case", ["missing-adapter", "missing-persona", "not-peft", "cut-weights", "bad-task-line",
                                  "no-agents", "twice"])
def test_bad_input_is_one_line_and_exit_2(case: str, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "plain").mkdir()
    (in_tmp / "plain" / "config.json").write_text("{}")
    # weights cut to 100 bytes: the judge (no adapter) was blamed once the model loaded, with exit 1
    (in_tmp / "cut").mkdir()
    (in_tmp / "cut" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (in_tmp / "cut" / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 4000) + b'{"w": ' + bytes(86))
    (in_tmp / "task.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n{"question": ""}\n')
    args = {"missing-adapter": ["debate", "--topic", "q", "--adapters", "adapters/nope"],
            "missing-persona": ["debate", "--topic", "q", "--adapters", "adapters/persona_b"],
            "not-peft": ["debate", "--topic", "q", "--adapters", "plain"],
            "cut-weights": ["debate", "--topic", "q", "--adapters", "cut"],
            "bad-task-line": ["debate", "eval", "--task", "task.jsonl", "--adapters", "plain"],
            "no-agents": ["debate", "--topic", "q"],
            "twice": ["debate", "--topic", "q", "--adapters", "plain", "--adapters", "plain"]}[case]
    assert main(args) == 2
    err = capsys.readouterr().err
    says = {"missing-adapter": "adapters/nope: adapter folder not found", "not-peft": "not a PEFT adapter",
            # train-persona's data defaults to persona_a's: the hint trained persona_a's into adapters/persona_b
            "missing-persona": "agentlab train-persona --data persona_b --out adapters/persona_b",
            "cut-weights": "error: cut/adapter_model.safetensors: not a readable safetensors file (truncated: the file "
                           "has 100 bytes",
            "bad-task-line": "task.jsonl:2: \"question\" must be non-empty text",
            "no-agents": "agentlab train-persona --data",
            # the folders as typed (it echoed `--adapters {'adapter': 'plain'} ...`)
            "twice": "error: --adapters plain --adapters plain: agents: name 'plain' used twice"}[case]
    assert says in " ".join(err.split()) and "Traceback" not in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("topic, kind", [("What is 3 times 4?", "numeric"), ("Is tea better than coffee?", "open")])
def test_gguf_agents_on_llama_cpp_answer_through_the_schema(topic: str, kind: str, in_tmp: Path,
                                                            tiny_model: dict[str, Path]) -> None:
    """A schema-enforcing backend: even a random-weight model's reply parses, answer first, a number or a stance."""
    pytest.importorskip("llama_cpp")
    (in_tmp / "llm.yaml").write_text(
        "providers:\n  local: {kind: llama_cpp, n_ctx: 2048, n_threads: 1, seed: 0}\nmodels:\n"
        + "".join(f"  {x}: {{provider: local, model: '{tiny_model['gguf']}'}}\n" for x in ("p1", "p2")))
    (in_tmp / "debate.yaml").write_text(f"topic: {topic}\nrounds: 1\nrule: last_round\nmax_tokens: 96\nagents:\n"
                                        "  - {model: p1}\n  - {model: p2}\n"
                                        + ("judge: p1\n" if kind == "open" else ""))  # a judge sums up open topics
    assert main(["debate", "-c", "debate.yaml", "--llm", "llm.yaml"]) == 0
    transcript = [json.loads(line) for line in (only_run(in_tmp) / "transcript.jsonl").read_text().splitlines()]
    assert len(transcript) == 4
    for answer in transcript:
        assert answer["error"] is None and answer["answer"] is not None, answer
        reply = json.loads(answer["text"])
        assert list(reply)[0] == "answer" and 0 <= answer["confidence"] <= 1
        if kind == "numeric":
            assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", reply["answer"])
        else:
            assert answer["answer"] in ("yes", "no", "mixed")




def test_a_resume_with_fewer_rounds_is_refused_before_anything_is_written(in_tmp: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """--rounds 1 on a finished 3-round debate cut results.json, report.md and config.yaml to 1 round while the
    transcript kept all 4 (`rounds[: n_rounds + 1]`)."""
    scripted(in_tmp)
    assert main(["debate", "--topic", "What is 5 plus 6?", *TWO, "--rounds", "3", "--out", "d"]) == 0
    before = snapshot(in_tmp / "d")
    capsys.readouterr()
    assert main(["debate", "--resume", "d", "--rounds", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: d: already has 3 debate rounds; --rounds can only extend it" in err and "Traceback" not in err
    assert "--rounds 3 or more" in err and err.count("error:") == 1
    assert snapshot(in_tmp / "d") == before
    assert main(["debate", "--resume", "d", "--rounds", "4"]) == 0  # extending it still works
    assert json.loads((in_tmp / "d" / "results.json").read_text())["rounds_asked"] == 4


def test_eval_resume_refuses_a_task_file_edited_in_place(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """The same --task path with other questions: the resume mixed the old scores with the new file's questions."""
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 5+6?", "answer": "11"}\n'
                                       '{"question": "What is 5+5?", "answer": "10"}\n')
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--limit", "1", "--out", "e"]) == 0
    before = snapshot(in_tmp / "e")
    (in_tmp / "task.jsonl").write_text("".join(f'{{"question": "What is {n}+1?", "answer": "{n + 1}"}}\n'
                                               for n in range(4)))
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "4"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "task.jsonl:1: the task file changed since this run scored that line" in err
    assert "'What is 5+6?'" in err and "'What is 0+1?'" in err and "Traceback" not in err
    assert snapshot(in_tmp / "e") == before
    # questions added after the scored ones are no change to them: that resume goes on
    (in_tmp / "task.jsonl").write_text('{"question": "What is 5+6?", "answer": "11"}\n'
                                       '{"question": "What is 9+1?", "answer": "10"}\n')
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 0


def test_eval_resume_refuses_a_lower_limit_than_it_scored(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--resume e --limit 2` on a finished 4-question eval said "resuming: 4 of 2 questions already scored", cut
    results.json and report.md to 2 questions while questions.jsonl kept 4, and saved limit 2 into config.yaml."""
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text("".join(f'{{"question": "What is {n}+1?", "answer": "{n + 1}"}}\n'
                                               for n in range(4)))
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--out", "e"]) == 0
    before = snapshot(in_tmp / "e")
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: e: already scored 4 questions; --limit 2 would leave out lines 3-4 of them" in err, err
    assert "resume with --limit 4 or more, or without --limit" in err and "Traceback" not in err
    assert snapshot(in_tmp / "e") == before
    (in_tmp / "task.jsonl").write_text('{"question": "What is 0+1?", "answer": "1"}\n')  # the file cut short
    assert main(["debate", "eval", "--resume", "e"]) == 2
    assert "task.jsonl now holds 1, without lines 2-4 of them" in " ".join(capsys.readouterr().err.split())
    assert snapshot(in_tmp / "e") == before


def test_eval_resume_refuses_a_limit_below_the_runs_own(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Killed after 1 of 4 questions scored, `--resume e --limit 1` ended 0 and marked the run completed on 1
    question: only the questions scored were compared, never the run's own limit (none: all 4)."""
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text("".join(f'{{"question": "What is {n}+1?", "answer": "{n + 1}"}}\n'
                                               for n in range(4)))
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--out", "e"]) == 0
    records = (in_tmp / "e" / "questions.jsonl").read_text().splitlines()
    (in_tmp / "e" / "questions.jsonl").write_text(records[0] + "\n")  # as a kill -9 after the first question
    before = snapshot(in_tmp / "e")
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: e: --limit 1 would shrink the run, which asks 4 questions (no --limit (all 4 questions" in err, err
    assert "resume without --limit (it keeps the run's 4), or with --limit 4 or more" in err and "a new run" in err
    assert snapshot(in_tmp / "e") == before
    assert main(["debate", "eval", "--resume", "e", "--limit", "4"]) == 0  # as many as the run asks: it goes on
    assert json.loads((in_tmp / "e" / "results.json").read_text())["questions"] == 4


def test_hints_name_the_commands_as_typed(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """An eval run is named debate-eval in runs/ and run.json: hints said `agentlab config show debate-eval` and
    `agentlab debate-eval -h`, neither of which exists."""
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 5+6?", "answer": "11"}\n')
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--limit", "0"]) == 2
    assert "`agentlab config show debate` lists every field" in " ".join(capsys.readouterr().err.split())
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--out", "e"]) == 0
    capsys.readouterr()
    assert main(["debate", "--resume", "e"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "`agentlab debate eval -h` says whether" in err and "debate-eval -h" not in err


@pytest.mark.parametrize("torn", [b'{"id": 1, "line": 2, "quest', b"\xff"])
def test_eval_resume_rewrites_a_torn_last_line_before_appending(torn: bytes, in_tmp: Path) -> None:
    """The question scored on resume was appended onto the torn line (one invalid line, asked again on every later
    resume); stray bytes that are no UTF-8 were an internal error."""
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 5+6?", "answer": "11"}\n'
                                       '{"question": "What is 9+2?", "answer": "11"}\n')
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--limit", "1", "--out", "e"]) == 0
    with open(in_tmp / "e" / "questions.jsonl", "ab") as handle:
        handle.write(torn)
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 0
    lines = (in_tmp / "e" / "questions.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [0, 1]
    assert json.loads((in_tmp / "e" / "results.json").read_text())["questions"] == 2


@pytest.mark.parametrize("args, says", [
    (["debate", "--topic", "caf\udce9 7*8?", *TWO], "--topic: not UTF-8 text (byte 0xe9 at character 4)"),
    (["debate", "--topic", "q 1", *TWO, "--out", "runs/x\udcff"], "--out: not UTF-8 text (byte 0xff at character 7)"),
    (["debate", "eval", "--task", "task.jsonl", *TWO, "--out", "runs/x\udcff"], "--out: not UTF-8 text (byte 0xff"),
])
def test_arguments_that_are_no_utf8_are_one_line_and_exit_2(args: list[str], says: str, in_tmp: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """It was an internal error (UnicodeEncodeError, exit 1) after the run folder was made (it held run.lock)."""
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 5+6?", "answer": "11"}\n')
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert says in err and "Traceback" not in err and "internal error" not in err
    assert not (in_tmp / "runs").exists()


def test_run_files_with_bad_bytes_resume_or_say_which_file(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A stray byte that is no UTF-8 at the end of transcript.jsonl is a torn line (dropped, the run goes on); a
    debate.sqlite that is no SQLite file is one line naming it and saying it can be deleted (exit 2, nothing
    written); deleted, the resume goes on from the transcript. Both were internal errors (exit 1)."""
    scripted(in_tmp)
    assert main(["debate", "--topic", "What is 5 plus 6?", *TWO, "--rounds", "1", "--out", "d"]) == 0
    with open(in_tmp / "d" / "transcript.jsonl", "ab") as handle:
        handle.write(b"\xff")
    assert main(["debate", "--resume", "d", "--rounds", "2"]) == 0
    lines = (in_tmp / "d" / "transcript.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 0, 1, 1, 2, 2]
    (in_tmp / "d" / "debate.sqlite").write_bytes(b"\xff" * 4096)
    before = snapshot(in_tmp / "d")
    capsys.readouterr()
    assert main(["debate", "--resume", "d", "--rounds", "3"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "d/debate.sqlite: not a readable debate checkpoint" in err and "delete it" in err
    assert "Traceback" not in err and err.count("error:") == 1 and snapshot(in_tmp / "d") == before
    (in_tmp / "d" / "debate.sqlite").unlink()
    assert main(["debate", "--resume", "d", "--rounds", "3"]) == 0
    lines = (in_tmp / "d" / "transcript.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("args, says", [
    (["--base-model", "nosuch"], "base_model: 'nosuch' would never be loaded: every agent is a routed model"),
    (["--visibility", "answer"], "visibility: 'answer' would never apply: rule vote decides on round 0"),
])
def test_options_that_would_be_ignored_are_refused(args: list[str], says: str, in_tmp: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    scripted(in_tmp)
    assert main(["debate", "--topic", "What is 5 plus 6?", *TWO, *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert says in err and err.count("error:") == 1 and "Traceback" not in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("routes, says", [
    ("", "judge (the routing config's models in file order, first a; it has no judge or default route)"),
    ("routes:\n  default: {primary: [b]}\n", "judge (the routing config's default route; it has no judge route)"),
    ("routes:\n  judge: {primary: [b]}\n", "judge (the routing config's judge route)"),
])
def test_the_dry_run_names_what_really_answers_for_the_judge(routes: str, says: str, in_tmp: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """It said "the routing config's judge route" where the config had none and its default route answered."""
    (in_tmp / "llm.yaml").write_text(SCRIPTED + routes)
    assert main(["debate", "--topic", "What is 5 plus 6?", *TWO, "--rounds", "0"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console is stderr
    assert says in err, err


def test_the_dry_run_refuses_resume(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--resume d --rounds 0` said "dry run ... nothing written" and ended 0: the resume ignored without a word."""
    scripted(in_tmp)
    assert main(["debate", "--topic", "What is 5 plus 6?", *TWO, "--rule", "last_round", "--rounds", "1",
                 "--out", "d"]) == 0
    before = snapshot(in_tmp / "d")
    capsys.readouterr()
    assert main(["debate", "--resume", "d", "--rounds", "0"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: --resume d: a dry run (--rounds 0) resumes nothing" in err and "drop --resume" in err, err
    assert "OK " not in err and snapshot(in_tmp / "d") == before


def test_the_dry_run_refuses_an_explicit_out(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--rounds 0 --out new` said "dry run ... nothing written" and ended 0: the folder ignored without a word."""
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 5+6?", "answer": "11"}\n')
    for command in (["debate", "--topic", "What is 5 plus 6?"], ["debate", "eval", "--task", "task.jsonl"]):
        assert main([*command, *TWO, "--rounds", "0", "--out", "new"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "error: --out has no effect on a dry run (--rounds 0): it writes nothing" in err, err
        assert err.count("error:") == 1 and "OK " not in err and not (in_tmp / "new").exists()
        assert main([*command, *TWO, "--rounds", "0"]) == 0  # without --out: the dry run
        capsys.readouterr()
    assert not (in_tmp / "runs").exists()


def swap_weights(folder: Path, other: Path) -> None:
    """``folder``'s weights replaced by ``other``'s (``train-persona --force``, another adapter copied over it)."""
    shutil.rmtree(folder)
    shutil.copytree(other, folder)


def test_a_resume_whose_adapter_changed_on_disk_is_refused(in_tmp: Path, tiny_model: dict[str, Path],
                                                           adapters: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    for name in ("persona_a", "persona_c"):
        shutil.copytree(adapters / name, in_tmp / name)
    args = ["--base-model", str(tiny_model["hf"]), "--adapters", "persona_a", "--adapters", "persona_c",
            "--set", "max_tokens=4", "--rule", "last_round", "--rounds", "1"]
    assert main(["debate", "--topic", "What is 2 plus 2?", *args, "--out", "d"]) == 0
    (in_tmp / "task.jsonl").write_text('{"question": "What is 5+6?", "answer": "11"}\n'
                                       '{"question": "What is 5+5?", "answer": "10"}\n')
    assert main(["debate", "eval", "--task", "task.jsonl", "--limit", "1", *args, "--set",
                 "eval.visibilities=[full]", "--out", "e"]) == 0
    before = {run: snapshot(in_tmp / run) for run in ("d", "e")}
    swap_weights(in_tmp / "persona_c", adapters / "persona_a")
    capsys.readouterr()
    for resume in (["debate", "--resume", "d", "--rounds", "2"], ["debate", "eval", "--resume", "e", "--limit", "2"]):
        assert main(resume) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "an adapter changed on disk since the run started (persona_c (" in err, err
        assert "the fingerprint of its weights); nothing was written" in err and err.count("error:") == 1
        assert "persona_a (" not in err and "put back the adapter" in err
    assert {run: snapshot(in_tmp / run) for run in ("d", "e")} == before
    assert set(json.loads((in_tmp / "d" / "adapters.json").read_text())) == {"persona_a", "persona_c"}
    swap_weights(in_tmp / "persona_c", adapters / "persona_c")  # put back: the resume goes on
    assert main(["debate", "--resume", "d", "--rounds", "2"]) == 0


@pytest.mark.parametrize("setting", [[], ["--set", "max_tokens=48"]])
def test_a_max_tokens_raised_for_structured_agents_and_the_judge_is_said_once(
        setting: list[str], in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`max_tokens: 48` was asked as 199 of a structured agent (160 of the judge) without a word: the raise stays
    (a cut JSON reply is no vote), documented for the default and a warning for a value set."""
    (in_tmp / "llm.yaml").write_text('providers:\n  s: {kind: scripted, replies: [\'{"answer": "11", "confidence": '
                                     '80, "reasoning": "x"}\']}\nmodels:\n  a: {provider: s, model: a}\n'
                                     '  b: {provider: s, model: b}\n')
    assert main(["debate", "--topic", "What is 5 plus 6?", "--llm", "llm.yaml", "--set",
                 "agents=[{model: a, structured: true}, {model: b}]", "--set", "judge=b", "--decision", "judge",
                 *setting, "--out", "d"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    said = ("max_tokens 48 is raised to 199 for the structured (JSON) agent(s) a: room for their reply schema's "
            "longest object, so a reply always completes; and to 160 for the judge: its decision or summary in full "
            "(free-text agents get it as set)")
    assert (said in err) is bool(setting) and err.count("is raised") == bool(setting), err
    calls = [json.loads(line) for line in (in_tmp / "d" / "llm_calls.jsonl").read_text().splitlines()]
    assert sorted({c["params"]["max_tokens"] for c in calls}) == ([48, 160, 199] if setting else [96, 160, 199])
    # the run's own config.yaml holds max_tokens either way: run again from it, the default is still not "set"
    assert main(["debate", "-c", "d/config.yaml", "--llm", "llm.yaml", "--out", "d2"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert ("is raised" in err) is bool(setting) and (said in err) is bool(setting), err


@pytest.mark.parametrize("given", ["file", "set"])
def test_an_agent_naming_no_model_of_the_routing_config_names_where(given: str, in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """It said `error: agents.1.model: ...` without the file:line (or --set) other config errors give."""
    scripted(in_tmp)
    agents = "[{model: a}, {model: nosuch}]"
    (in_tmp / "debate.yaml").write_text("topic: What is 5 plus 6?\nagents:\n  - {model: a}\n  - model: nosuch\n")
    args = ["-c", "debate.yaml"] if given == "file" else ["--topic", "What is 5 plus 6?", "--set", f"agents={agents}"]
    assert main(["debate", *args, "--llm", "llm.yaml"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    where = "debate.yaml:4" if given == "file" else f"--set agents={agents}"
    assert f"error: {where}: agents.1.model: 'nosuch' is no model or route of the routing config" in err, err


@pytest.mark.parametrize("decision", ["reconcile", "judge"])
def test_a_debate_where_nothing_parsed_says_nothing_was_decided(decision: str, in_tmp: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """An open topic where no reply parsed said "the reconcile vote (rule last_round) decided" (and "Decided by a
    confidence-weighted vote ...") though nothing was decided."""
    (in_tmp / "llm.yaml").write_text('providers:\n  s: {kind: scripted, replies: ["blah blah"]}\nmodels:\n'
                                     "  a: {provider: s, model: a}\n  b: {provider: s, model: b}\n")
    assert main(["debate", "--topic", "Is tea better than coffee?", "--llm", "llm.yaml", "--set",
                 "agents=[{model: a}, {model: b}]", "--judge", "a", "--decision", decision, "--rounds", "1",
                 "--rule", "last_round", "--out", "d"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    said = ("Nothing was decided: no answer in the rounds that rule last_round counts could be parsed, so the "
            "reconcile vote had nothing to count.")
    report = (in_tmp / "d" / "report.md").read_text()
    assert said in err and said in report and "Decided by" not in err + report and "vote (rule" not in err, err
    assert ("the judge gave no parseable answer either" in err) is (decision == "judge")


# `debate eval --resume --limit` compared the limit with the task file's count at resume time: a question appended to
# the task file (which the docs allow) made a run that asked and scored 2 of 2 "shrink" at `--limit 2`. The run keeps
# the number of questions it asks in run.json when it starts; a run made before has the scored-questions rule.


def _task(in_tmp: Path, n: int) -> None:
    (in_tmp / "task.jsonl").write_text("".join(f'{{"question": "What is {k}+1?", "answer": "{k + 1}"}}\n'
                                               for k in range(n)))


def _eval(in_tmp: Path, n: int) -> None:
    scripted(in_tmp)
    _task(in_tmp, n)
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--out", "e"]) == 0


def test_a_question_appended_to_the_task_file_is_not_the_runs_own(in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    _eval(in_tmp, 2)
    assert json.loads((in_tmp / "e" / "run.json").read_text())["eval_questions"] == 2
    _task(in_tmp, 3)  # one line appended
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 0, capsys.readouterr().err
    assert json.loads((in_tmp / "e" / "results.json").read_text())["questions"] == 2
    assert main(["debate", "eval", "--resume", "e", "--limit", "3"]) == 0  # the appended one asked: it asks 3 now
    assert json.loads((in_tmp / "e" / "run.json").read_text())["eval_questions"] == 3
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--limit 2 would leave out line 3" in err, err


def test_a_run_killed_early_keeps_the_count_it_asks(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Scored 1 of 3 when killed, one line appended since: --limit 2 shrinks the run's own 3 (the file holds 4)."""
    _eval(in_tmp, 3)
    records = (in_tmp / "e" / "questions.jsonl").read_text().splitlines()
    (in_tmp / "e" / "questions.jsonl").write_text(records[0] + "\n")  # as a kill -9 after the first question
    _task(in_tmp, 4)
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: e: --limit 2 would shrink the run, which asks 3 questions (no --limit (all 3 questions" in err, err
    assert main(["debate", "eval", "--resume", "e", "--limit", "3"]) == 0


def test_a_run_made_before_the_count_was_kept_goes_by_what_it_scored(in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    _eval(in_tmp, 3)
    info = json.loads((in_tmp / "e" / "run.json").read_text())
    del info["eval_questions"]  # as a run made before the change
    (in_tmp / "e" / "run.json").write_text(json.dumps(info))
    records = (in_tmp / "e" / "questions.jsonl").read_text().splitlines()
    (in_tmp / "e" / "questions.jsonl").write_text("".join(r + "\n" for r in records[:2]))  # scored 2 of 3
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "1"]) == 2  # below what it scored: refused
    assert "already scored 2 questions; --limit 1 would leave out line 2" in " ".join(capsys.readouterr().err.split())
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 0, capsys.readouterr().err
    assert json.loads((in_tmp / "e" / "results.json").read_text())["questions"] == 2
