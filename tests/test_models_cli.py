"""`agentlab models make-tiny / list / check` from the command line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main

MODELS_YAML = """\
models_directory: models
defaults: {n_ctx: 256}
models:
  here: {file: tiny/model.gguf, quantization: f32}
  here-too: {file: tiny/model.gguf, quantization: float32}
  hf-too: {file: tiny, quantization: f32}
  wrong-type: {file: tiny/model.gguf, quantization: q8_0}
  gone: {file: nowhere/model.gguf}
  spare: {file: nowhere/model.gguf, required_for_base: false}
  folder: {file: tiny}
"""


def test_make_tiny_writes_hf_gguf_and_quantized_copy(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    # Q8_0 as llama.cpp spells it: make-tiny refused it ("unknown kind") while export took any case
    assert main(["models", "make-tiny", "m", "--seed", "7", "--quantize", "Q8_0", "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)  # stdout is pure JSON: llama.cpp's quantizer log is kept off it
    assert set(paths) == {"hf", "gguf", "q8_0"}
    assert (in_tmp / "m" / "config.json").is_file() and (in_tmp / "m" / "tokenizer.json").is_file()
    from agentlab.core.models.modelfiles import gguf_info

    f32, q8 = gguf_info(paths["gguf"]), gguf_info(paths["q8_0"])
    assert (f32.file_type, q8.file_type) == ("f32", "q8_0") and q8.size_bytes < f32.size_bytes / 2
    assert f32.chat_template and f32.n_layers == 2
    # every file as open() makes it (safetensors' save_file made model.safetensors 0600 beside 0644 files)
    from agentlab.core.files import umask

    modes = {p.name: p.stat().st_mode & 0o777 for p in (in_tmp / "m").iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask()) and "model.safetensors" in modes
    assert (in_tmp / "m").stat().st_mode & 0o777 == 0o777 & ~umask()


def test_make_tiny_same_seed_same_files_in_any_folder(tiny_model: dict[str, Path], in_tmp: Path) -> None:
    """model.gguf stored the folder's name as general.name: the same seed gave other bytes in another folder."""
    assert main(["models", "make-tiny", "another-name", "--seed", "0"]) == 0
    made = {p.name: p.read_bytes() for p in (in_tmp / "another-name").iterdir()}
    assert made == {p.name: p.read_bytes() for p in tiny_model["hf"].iterdir()} and "model.gguf" in made
    from agentlab.core.models.modelfiles import gguf_info

    assert gguf_info(in_tmp / "another-name" / "model.gguf").name == "tiny-llama-seed0"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder where no file can be made")
def test_make_tiny_where_nothing_can_be_written_names_the_path_given(in_tmp: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """It was exit 1 naming its hidden temporary folder: "error: /proc/.x.3twgaz62.partial: No such file..."."""
    assert main(["models", "make-tiny", "/proc/x"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: /proc/x: cannot write in /proc (" in err and "nothing was written" in err and ".partial" not in err


def test_an_empty_path_is_refused_not_taken_for_the_current_folder(in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """`make-tiny ''` was refused as `.`, `list ''` listed the current folder (exit 0)."""
    for args, name in ((["make-tiny", ""], "out"), (["list", ""], "directory"), (["list", "--adapters", ""],
                                                                                 "--adapters")):
        assert main(["models", *args]) == 2, args
        assert f"error: Invalid value for '{name}': empty; give a folder path" in " ".join(
            capsys.readouterr().err.split())
    assert not list(in_tmp.iterdir())


def test_make_tiny_rejects_unknown_quantization(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "make-tiny", "m", "--quantize", "q3_bogus"]) == 2
    assert "q8_0" in capsys.readouterr().err and not (in_tmp / "m").exists()


def test_list_and_check(tiny_model: dict[str, Path], in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "tiny")
    (in_tmp / "models.yaml").write_text(MODELS_YAML)

    assert main(["models", "list", "models", "--json"]) == 0
    listed = {(m["format"], Path(m["path"]).name) for m in json.loads(capsys.readouterr().out)
              if m["format"] != "builtin"}  # built-in models are listed too (tests/pipeline/test_builtin_model.py)
    assert listed == {("hf", "tiny"), ("gguf", "model.gguf")}

    assert main(["models", "check", "models.yaml", "--json"]) == 1  # a required model is missing
    report = json.loads(capsys.readouterr().out)
    by_name = {m["name"]: m for m in report["models"]}
    assert not report["ok"]
    assert by_name["here"]["ok"] and by_name["here"]["exists"] and by_name["here"]["fits"]
    assert by_name["here-too"]["ok"] and by_name["hf-too"]["ok"]  # float32 and f32: one type (was a mismatch)
    assert by_name["here"]["estimate"]["total_bytes"] > tiny_model["gguf"].stat().st_size
    assert by_name["wrong-type"]["quantization_found"] == "f32" and not by_name["wrong-type"]["ok"]
    assert by_name["gone"]["exists"] is False and "make-tiny models/nowhere`" in by_name["gone"]["note"]
    assert by_name["folder"]["backend"] == "hf" and by_name["folder"]["exists"]

    (in_tmp / "models.yaml").write_text("\n".join(line for line in MODELS_YAML.splitlines()
                                                  if "gone" not in line and "wrong-type" not in line))
    assert main(["models", "check", "-c", "models.yaml"]) == 0  # only an optional model is missing
    out = capsys.readouterr().err
    assert "here" in out and "spare" in out and "KV" in out


def test_check_adds_up_the_required_models_as_pipeline_run_does(tiny_model: dict[str, Path], in_tmp: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """Each model fitting alone was "ok", but `pipeline run` loads them together and refuses a set that does not
    fit; a file two names share with the same settings loads once."""
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "tiny")
    models = ("models_directory: models\nresources: {{memory_budget_gb: {budget}}}\nmodels:\n"
              "  a: {{file: tiny/model.gguf, overrides: {{n_ctx: 256}}}}\n  a-too: {{file: tiny/model.gguf, "
              "overrides: {{n_ctx: 256}}}}\n  b: {{file: tiny/model.gguf, overrides: {{n_ctx: 128}}}}\n")
    (in_tmp / "models.yaml").write_text(models.format(budget=1))
    assert main(["models", "check", "models.yaml", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    alone = {m["name"]: m["estimate"]["total_bytes"] for m in report["models"]}
    together = report["together"]
    assert together["models"] == ["a", "a-too", "b"] and together["fits"] and report["ok"]
    assert together["needs_bytes"] == alone["a"] + alone["b"]  # a and a-too: one load
    # room for the largest alone (x 0.85), not for two loads at once
    (in_tmp / "models.yaml").write_text(models.format(budget=round(alone["a"] * 1.3 / 2**30, 6)))
    assert main(["models", "check", "models.yaml"]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "not ready: the required models do not fit together" in said
    assert main(["models", "check", "models.yaml", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert all(m["fits"] for m in report["models"]) and report["together"]["fits"] is False and not report["ok"]


def test_check_looks_routed_models_up_in_the_routing_config(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`routed: nosuch` was ok without a look at the routing config, which `pipeline run` refuses it by."""
    (in_tmp / "models.yaml").write_text("models:\n  cloud: {routed: nosuch, required_for_base: false}\n"
                                        "  there: {routed: m, required_for_base: false}\n")
    assert main(["models", "check", "models.yaml", "--json"]) == 0  # optional, and no configs/llm.yaml
    by_name = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert by_name["cloud"]["ok"] is None and "not checked, no routing config" in by_name["cloud"]["note"]
    assert main(["models", "check", "models.yaml"]) == 0
    assert "not checked" in capsys.readouterr().err
    (in_tmp / "llm.yaml").write_text("providers:\n  p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
                                     "models:\n  m: {provider: p, model: m}\n")
    assert main(["models", "check", "models.yaml", "--llm", "llm.yaml", "--json"]) == 0
    by_name = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert by_name["cloud"]["ok"] is False and by_name["cloud"]["exists"] is False
    assert "'nosuch' is not a model of the routing config llm.yaml (known: m)" in by_name["cloud"]["note"]
    assert by_name["there"]["ok"] and "'m' of llm.yaml (provider p)" in by_name["there"]["note"]
    (in_tmp / "models.yaml").write_text("models:\n  cloud: {routed: nosuch}\n")  # required: not ready either way
    assert main(["models", "check", "models.yaml"]) == 1
    assert "not ready: cloud" in " ".join(capsys.readouterr().err.split())
    (in_tmp / "configs").mkdir()
    (in_tmp / "llm.yaml").rename(in_tmp / "configs" / "llm.yaml")  # the default, as `pipeline run` reads it
    assert main(["models", "check", "models.yaml"]) == 1
    assert "'nosuch' is not a model of the routing config configs/llm.yaml" in " ".join(capsys.readouterr().err.split())


def test_unreadable_model_files_are_named_by_list_and_not_ready_in_check(tiny_model: dict[str, Path], in_tmp: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """A file that is not a GGUF, a truncated one, a folder whose config.json is not UTF-8 and a broken adapter were
    left out of `models list` ("no models under ...") and `models check` called them ready (exit 0)."""
    models = in_tmp / "models"
    (models / "trunc").mkdir(parents=True)
    (models / "fake.gguf").write_text("not a gguf")
    (models / "trunc" / "model.gguf").write_bytes(tiny_model["gguf"].read_bytes()[:1000])
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_bytes(b"\xff{")
    (in_tmp / "adapters" / "bad").mkdir(parents=True)
    (in_tmp / "adapters" / "bad" / "adapter_config.json").write_text("{x")
    (in_tmp / "m.yaml").write_text("models_directory: models\nmodels:\n  f: {file: fake.gguf}\n"
                                   "  t: {file: trunc/model.gguf}\n  b: {file: broken}\n")
    assert main(["models", "check", "m.yaml", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and all(m["unreadable"] and not m["ok"] for m in report["models"])
    assert main(["models", "check", "m.yaml"]) == 1
    assert capsys.readouterr().err.count("unreadable") >= 3

    assert main(["models", "list", "models", "--json"]) == 0
    listed = {Path(m["path"]).name for m in json.loads(capsys.readouterr().out) if m["format"] == "unreadable"}
    assert listed == {"fake.gguf", "model.gguf", "broken", "bad"}
    assert main(["models", "list", "models"]) == 0
    err = capsys.readouterr().err
    assert "unreadable: " in err and "fake.gguf: not a readable GGUF file" in err and "adapters/bad" in err
    assert "no readable adapters under adapters/" in " ".join(err.split())  # found, but none readable


def test_check_bad_models_file_exits_2(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "models.yaml").write_text("models:\n  a: {file: x.gguf, n_ctx: 5}\n")
    assert main(["models", "check", "models.yaml"]) == 2
    assert "models.yaml:2" in capsys.readouterr().err


def test_check_a_models_file_without_models_says_so(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`models: {}` (what `config show models` prints) was an empty table and exit 0."""
    from agentlab.cli.config_cmd import config_text

    (in_tmp / "shown.yaml").write_text(config_text("models"))
    for args in (["shown.yaml"], ["shown.yaml", "--json"]):
        assert main(["models", "check", *args]) == 2
        captured = capsys.readouterr()
        err = " ".join(captured.err.split())
        assert "error: shown.yaml: no models under `models:`, nothing to check" in err and "hint: add one" in err
        assert captured.out == ""


@pytest.mark.parametrize("directory", [None, "models", "./models", ".", "ABSOLUTE"])
def test_list_any_spelling_of_the_folder(directory: str | None, tiny_model: dict[str, Path], in_tmp: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    """The default folder, relative spellings and an absolute path all list the GGUF and the HF folder, with paths
    relative to the folder (the GGUF reader used to report resolved paths, the HF reader the path as given)."""
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "t")
    args = [] if directory is None else [str(in_tmp / "models") if directory == "ABSOLUTE" else directory]
    assert main(["models", "list", *args]) == 0
    err = capsys.readouterr().err
    prefix = "models/" if directory == "." else ""
    assert f"{prefix}t/model.gguf" in err and "Traceback" not in err

    assert main(["models", "list", *args, "--json"]) == 0
    paths = {m["format"]: m["path"] for m in json.loads(capsys.readouterr().out)}
    assert Path(paths["gguf"]).parent == Path(paths["hf"])  # one spelling for both formats


def test_list_skips_a_broken_model_folder(tiny_model: dict[str, Path], in_tmp: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "t")
    (in_tmp / "models" / "bad-config").mkdir()
    (in_tmp / "models" / "bad-config" / "config.json").write_text("{not json")
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "bad-weights", ignore=shutil.ignore_patterns("*.gguf"))
    (in_tmp / "models" / "bad-weights" / "model.safetensors").write_bytes(b"xx")
    assert main(["models", "list", "--json"]) == 0
    listed = [m for m in json.loads(capsys.readouterr().out) if m["format"] != "builtin"]
    assert sorted(Path(m["path"]).name for m in listed if m["format"] != "unreadable") == ["model.gguf", "t"]
    assert sorted(Path(m["path"]).name for m in listed if m["format"] == "unreadable") == ["bad-config",
                                                                                           "bad-weights"]


def test_make_tiny_refuses_an_existing_file_or_filled_folder(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "taken.gguf").write_bytes(b"keep me")
    (in_tmp / "filled").mkdir()
    (in_tmp / "filled" / "config.json").write_text("{}")
    for target, extra, says in (("taken.gguf", [], "is a file"), ("taken.gguf", ["--force"], "is a file"),
                                ("filled", [], "--force"),
                                ("taken.gguf/sub", [], "taken.gguf is a file, not a folder")):  # was "cannot create"
        assert main(["models", "make-tiny", target, *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 2 and f"{target}: " in err and says in err, err  # error, hint
    assert (in_tmp / "taken.gguf").read_bytes() == b"keep me"
    assert (in_tmp / "filled" / "config.json").read_text() == "{}"


def _fake_builders(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[Path]:
    """make-tiny's builders replaced by quick fakes that write a file of each kind (``fail``: the GGUF export raises,
    as a crash would end it, once the HF files are written); returns the folders the model was built in."""
    from agentlab.core.train import tiny

    built: list[Path] = []

    def model(out: Path, **kw: object) -> Path:
        built.append(Path(out))
        (Path(out) / "config.json").write_text('{"model_type": "llama"}')
        return Path(out)

    def export(src: Path, dst: Path, **kw: object) -> Path:
        if fail:
            raise RuntimeError("the GGUF export died")
        Path(dst).write_bytes(b"GGUF new")
        return Path(dst)

    monkeypatch.setattr(tiny, "make_tiny_model", model)
    monkeypatch.setattr(tiny, "export_gguf", export)
    monkeypatch.setattr(tiny, "quantize_gguf", lambda src, dst, **kw: Path(dst).write_bytes(b"GGUF q") and Path(dst))
    return built


def test_make_tiny_force_replaces_a_model_folder_as_a_whole(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--force over a folder made with --quantize q8_0 kept the old model.q8_0.gguf beside the new weights (and
    `models list` showed it); the folder is now replaced as a whole. A folder of other files is not a model folder:
    --force there would delete them, so it is refused."""
    built = _fake_builders(monkeypatch)
    assert main(["models", "make-tiny", "m", "--quantize", "q8_0", "--json"]) == 0
    assert (in_tmp / "m" / "model.q8_0.gguf").is_file() and built[-1].parent == in_tmp  # built beside m, not in it
    assert built[-1].name.startswith(".m.") and not built[-1].exists()  # renamed into place
    assert main(["models", "make-tiny", "m", "--seed", "7", "--json"]) == 2  # a model there: --force needed
    assert main(["models", "make-tiny", "m", "--seed", "7", "--force", "--json"]) == 0
    assert sorted(p.name for p in (in_tmp / "m").iterdir()) == ["config.json", "model.gguf"]
    assert sorted(p.name for p in in_tmp.iterdir()) == ["m"]  # no temporary or old folder left
    assert main(["models", "make-tiny", "empty-but-there", "--json"]) == 0  # a new folder needs no --force
    (in_tmp / "empty").mkdir()
    assert main(["models", "make-tiny", "empty", "--json"]) == 0  # nor does an empty one
    capsys.readouterr()

    (in_tmp / "filled").mkdir()
    (in_tmp / "filled" / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        assert main(["models", "make-tiny", "filled", *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 2 and "filled: holds files but is not a model folder" in err, err
        assert "pass --force" not in err  # not offered where it would be refused
    assert main(["models", "make-tiny", ".", "--force"]) == 2  # the current folder: never replaced
    assert (in_tmp / "filled" / "notes.txt").read_text() == "mine"


def test_make_tiny_that_fails_leaves_no_half_made_model(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A build that dies after the HF files are written left them at OUT without model.gguf (listed as a healthy
    model; a rerun said "pass --force"); with --force, the old model was already half overwritten."""
    _fake_builders(monkeypatch, fail=True)
    assert main(["models", "make-tiny", "m"]) == 1
    assert not list(in_tmp.iterdir())  # neither m nor its temporary folder
    (in_tmp / "old").mkdir()
    (in_tmp / "old" / "config.json").write_text('{"model_type": "llama", "old": true}')
    (in_tmp / "old" / "model.gguf").write_bytes(b"GGUF old")
    assert main(["models", "make-tiny", "old", "--force"]) == 1
    assert (in_tmp / "old" / "model.gguf").read_bytes() == b"GGUF old" and '"old"' in (
        in_tmp / "old" / "config.json").read_text()  # the old model stays whole until a new one is complete
    assert sorted(p.name for p in in_tmp.iterdir()) == ["old"]


def test_make_tiny_killed_leaves_no_model_at_out(in_tmp: Path, sigkill_when: Any,
                                                 capsys: pytest.CaptureFixture) -> None:
    """`kill -9` mid-build (the HF files written, the GGUF not yet) left OUT with HF files and no model.gguf: listed
    as a healthy hf model, and a rerun said "the folder already holds files; pass --force"."""
    sigkill_when(["models", "make-tiny", "j", "--quantize", "q8_0"],
                 lambda: any(in_tmp.glob("j/config.json")) or any(in_tmp.glob(".j.*/config.json")))
    assert not (in_tmp / "j").exists()
    [partial] = in_tmp.glob(".j.*.partial")  # the hidden temporary folder: left out of `models list`
    assert main(["models", "list", ".", "--json"]) == 0
    assert not [m for m in json.loads(capsys.readouterr().out) if m["format"] in ("hf", "gguf", "unreadable")]


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_make_tiny_refuses_a_seed_out_of_range(seed: str, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A seed past 64 bits ended in "internal error: ValueError: Overflow when unpacking long long", exit 1, with a
    folder holding only the tokenizer."""
    assert main(["models", "make-tiny", "m", "--seed", seed]) == 2
    err = capsys.readouterr().err
    assert f"error: --seed {seed}: out of range\nhint: give a seed from 0 to 18446744073709551615" in err
    assert "internal" not in err
    assert not list(in_tmp.iterdir())


def _fake_adapter(folder: Path, base: str, r: int = 8) -> None:
    """A PEFT adapter folder as train-persona leaves it (config + weights file); `models list` reads, never loads."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r,
                                                            "base_model_name_or_path": base}))
    (folder / "adapter_model.safetensors").write_bytes(_safetensors(2048))


def _safetensors(size: int) -> bytes:
    """A safetensors file of ``size`` bytes: one uint8 tensor after a 128-byte header (padded with spaces)."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size - 136], "data_offsets": [0, size - 136]}}).encode()
    return (128).to_bytes(8, "little") + header.ljust(128) + b"\0" * (size - 136)


def test_list_shows_trained_adapters_with_their_base(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Right after `train-persona --out adapters/X` the adapters are listed (it used to say only "no models under
    models/"); a half-written `.X.partial` folder and a folder without weights are not."""
    _fake_adapter(in_tmp / "adapters" / "persona_a", "HuggingFaceTB/SmolLM2-135M-Instruct")
    _fake_adapter(in_tmp / "adapters" / "skill_units", "models/tiny", r=4)
    _fake_adapter(in_tmp / "adapters" / ".persona_b.partial", "HuggingFaceTB/SmolLM2-135M-Instruct")
    (in_tmp / "adapters" / "empty").mkdir()
    (in_tmp / "adapters" / "empty" / "adapter_config.json").write_text('{"peft_type": "LORA"}')

    assert main(["models", "list", "--json"]) == 0
    listed = {Path(m["path"]).name: m for m in json.loads(capsys.readouterr().out) if m["format"] == "adapter"}
    assert set(listed) == {"persona_a", "skill_units"}
    assert listed["persona_a"]["base"] == "smollm2-135m" and listed["persona_a"]["r"] == 8
    assert listed["skill_units"]["base"] == "models/tiny" and listed["skill_units"]["size_bytes"] == 2048

    assert main(["models", "list"]) == 0
    err = capsys.readouterr().err
    assert "adapters under adapters/" in err and "persona_a" in err and "smollm2-135m" in err
    assert "partial" not in err and "Traceback" not in err

    # weights cut short (`export` refuses them: "weights cannot be read"): on the unreadable line, as a cut GGUF is
    _fake_adapter(in_tmp / "adapters" / "cut", "models/tiny")
    weights = in_tmp / "adapters" / "cut" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {Path(m["path"]).name for m in rows if m["format"] == "adapter"} == {"persona_a", "skill_units"}
    assert [m["error"] for m in rows if m["format"] == "unreadable" and m["path"].endswith("cut")] == [
        "adapters/cut/adapter_model.safetensors: not a readable safetensors file (truncated: the file has 1000 bytes, "
        "its tensors end at byte 2048)"]
    assert main(["models", "list"]) == 0
    assert "unreadable: adapters/cut/adapter_model.safetensors: not a readable safetensors file (truncated" in " ".join(
        capsys.readouterr().err.split())

    (in_tmp / "elsewhere").mkdir()
    assert main(["models", "list", "--adapters", "elsewhere"]) == 0
    assert "no adapters under elsewhere/" in capsys.readouterr().err


def test_a_folder_named_that_is_missing_or_a_file_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A folder you name is one you meant: missing or a file is exit 2 (it listed nothing, exit 0). The defaults,
    models/ and adapters/, may be absent."""
    (in_tmp / "f.yaml").write_text("a: 1\n")
    for args, said in ((["nosuch"], "nosuch: models folder not found"), (["f.yaml"], "f.yaml: models folder is a file"),
                       (["--adapters", "nosuch"], "nosuch: --adapters folder not found")):
        assert main(["models", "list", *args]) == 2, args
        assert said in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    assert main(["models", "check", "a.yaml", "-c", "b.yaml"]) == 2
    assert "two models files given: a.yaml and -c b.yaml" in capsys.readouterr().err


def test_the_advice_for_a_missing_model_file_names_its_own_folder() -> None:
    from agentlab.pipeline.config import make_advice

    assert make_advice(Path("models/a/model.gguf")) == "make it with `agentlab models make-tiny models/a`"
    assert make_advice(Path("models/nothere.gguf")).startswith(  # was `make-tiny models`: the models folder itself
        "make a tiny model with `agentlab models make-tiny models/nothere` and point `file` at its model.gguf")
    assert make_advice(Path("models/hf-folder")) == "make it with `agentlab models make-tiny models/hf-folder`"


def test_export_hf_refuses_the_folder_that_holds_its_source(tiny_model: dict[str, Path], in_tmp: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """`export-hf models/src/model.gguf --out models/src --force` on a make-tiny folder exited 0 with the source
    model.gguf (and any model.q8_0.gguf) deleted: the folder it was replacing held it."""
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "src")
    (in_tmp / "models" / "src" / "model.q8_0.gguf").write_bytes(b"GGUF q")
    before = sorted(p.name for p in (in_tmp / "models" / "src").iterdir())
    for source, out in (("models/src/model.gguf", "models/src"), ("models/src/model.gguf", "models"),
                        ("models/src", "models/src"), (str(in_tmp / "models" / "src"), "./models/src/")):
        assert main(["models", "export-hf", source, "--out", out, "--force"]) == 2, (source, out)
        err = capsys.readouterr().err
        assert f"--out {Path(out)}: is or holds the model being exported" in err, err
    assert sorted(p.name for p in (in_tmp / "models" / "src").iterdir()) == before
    assert sorted(p.name for p in (in_tmp / "models").iterdir()) == ["src"]


def test_export_hf_refuses_a_truncated_gguf(tiny_model: dict[str, Path], in_tmp: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """A truncated GGUF ended in exit 1, "transformers could not convert this GGUF" and a hint about architecture
    support; it is bad input, with the reason `models check` gives. A file cut inside its tensor data (a whole
    header) was also "yes" in `models check`."""
    data = tiny_model["gguf"].read_bytes()
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "head.gguf").write_bytes(data[:1000])
    (in_tmp / "models" / "data.gguf").write_bytes(data[:-1000])
    for name in ("head.gguf", "data.gguf"):
        assert main(["models", "export-hf", f"models/{name}", "--out", "out"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{name}: not a readable GGUF file (truncated: " in err and "architecture" not in err, err
    assert not (in_tmp / "out").exists()
    (in_tmp / "m.yaml").write_text("models_directory: models\nmodels:\n  d: {file: data.gguf}\n")
    assert main(["models", "check", "m.yaml", "--json"]) == 1
    [status] = json.loads(capsys.readouterr().out)["models"]
    assert status["unreadable"] and "truncated: its tensor data needs" in status["note"]


def test_a_path_that_names_nothing_says_check_the_path_not_hf_download(in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """`export-hf models/nope.gguf` suggested `hf download models/nope.gguf`: a path, never a hub id."""
    for ref in ("models/nope.gguf", "./nope", "a/b/c"):
        assert main(["models", "export-hf", ref, "--out", "out"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "hint: check the path (no file or folder is there)" in err and "hf download" not in err, err
    assert main(["models", "export-hf", "org/name", "--out", "out"]) == 2  # a hub id: fetch it once
    err = " ".join(capsys.readouterr().err.split())
    assert "`hf download org/name`" in err and "check the path" not in err
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "junk.gguf").write_text("not a model")  # there, but no GGUF: not a path to check
    assert main(["models", "export-hf", "models/junk.gguf", "--out", "out"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "check the path" not in err
    # the reason `models list` and `check` give (it said "not found; tried a GGUF file (... is a file but not GGUF)")
    assert "error: models/junk.gguf: not a readable GGUF file (starts with b'not ', not GGUF)" in err
    assert main(["models", "list", "models"]) == 0
    assert "models/junk.gguf: not a readable GGUF file (starts with b'not ', not GGUF)" in \
        " ".join(capsys.readouterr().err.split())


def test_list_says_an_empty_gguf_plainly(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """An empty .gguf was "(ValueError: cannot mmap an empty file)": the class name is no reason."""
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "e.gguf").write_bytes(b"")
    assert main(["models", "list"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "unreadable: models/e.gguf: not a readable GGUF file (empty file)" in said and "Error" not in said


def test_a_misspelled_builtin_name_is_suggested(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`models check` said "did you mean smollm2-135m?" for a models file's `file`; export-hf did not."""
    for ref, meant in (("smollm2-135M", "smollm2-135m"), ("qwen2.5-coder-0.5", "qwen2.5-coder-0.5b")):
        assert main(["models", "export-hf", ref, "--out", "out"]) == 2
        assert f"hint: did you mean {meant}? Or use a built-in model" in " ".join(capsys.readouterr().err.split())
    for ref in ("nosuch", "models/smollm2-135M", "smollm2-135M.gguf"):  # no name close, or a path: no guess
        assert main(["models", "export-hf", ref, "--out", "out"]) == 2
        assert "did you mean" not in capsys.readouterr().err, ref


@pytest.mark.parametrize("how, says", [
    ("bad-json", "config.json:2: invalid JSON"), ("empty-config", "config.json: names no model"),
    ("config-only", ": no weights (none of model.safetensors"), ("no-tokenizer", ": no tokenizer (none of"),
    ("cut-weights", "model.safetensors: not a readable safetensors file (truncated")])
def test_export_hf_refuses_a_broken_transformers_folder(how: str, says: str, tiny_model: dict[str, Path],
                                                        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`export-hf junk/hf --out x1` with config.json `{` copied the folder and said "transformers folder: x1 (2 B)",
    exit 0 (so did `{}`, and `{"model_type": "llama"}` with no weights), though `models list` and
    `train-persona --base-model` refuse such folders."""
    src = in_tmp / "src"
    if how in ("no-tokenizer", "cut-weights"):
        shutil.copytree(tiny_model["hf"], src, ignore=shutil.ignore_patterns("*.gguf"))
        if how == "no-tokenizer":
            (src / "tokenizer.json").unlink()
        else:
            (src / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:5000])
    else:
        src.mkdir()
        (src / "config.json").write_text({"bad-json": "{\n", "empty-config": "{}",
                                          "config-only": '{"model_type": "llama"}'}[how])
    assert main(["models", "export-hf", "src", "--out", "x1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert says in err and "Traceback" not in err, err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["src"]


def test_check_says_when_it_assembles_a_split_builtin_and_fits_80_columns(
        tiny_model: dict[str, Path], in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """`models check` on a file naming the Qwen built-ins assembled both GGUFs (~1.6 GB) into the cache without a
    word, and at 80 columns every cell of the `fits` column was `…`."""
    import dataclasses
    import hashlib

    from agentlab.core.models.builtin import BUILTIN_MODELS

    data = tiny_model["gguf"].read_bytes()
    names = []
    for i, piece in enumerate((data[:1000], data[1000:]), 1):  # a split model of fake part packages
        folder = in_tmp / "site" / f"agentlab_fake_part{i}" / "data"
        folder.mkdir(parents=True)
        (folder / f"part{i:02d}.bin").write_bytes(piece)
        names.append(f"agentlab_fake_part{i}")
    monkeypatch.syspath_prepend(str(in_tmp / "site"))
    monkeypatch.setenv("AGENTLAB_CACHE", str(in_tmp / "cache"))
    monkeypatch.setitem(BUILTIN_MODELS, "qwen2.5-coder-9b", dataclasses.replace(
        BUILTIN_MODELS["qwen2.5-coder-0.5b"], name="qwen2.5-coder-9b", file="fake.gguf", package=names[0],
        parts=tuple(names), sha256=hashlib.sha256(data).hexdigest()))
    monkeypatch.setenv("COLUMNS", "80")
    (in_tmp / "m.yaml").write_text("models:\n  qwen2.5-coder-9b-instruct: {file: qwen2.5-coder-9b, quantization: "
                                   "q4_0}\n  qwen2.5-coder-9b-spare: {file: qwen2.5-coder-9b, required_for_base: "
                                   "false}\n")
    assert main(["models", "check", "m.yaml"]) == 1  # the declared type differs: not ready
    err = capsys.readouterr().err
    assert err.count(f"assembling built-in model qwen2.5-coder-9b from 2 parts into {in_tmp / 'cache'}") == 1, err
    table = err[err.index("┏"):err.index("┘")].splitlines()
    assert max(map(len, table)) <= 80 and "…" not in "".join(table), err
    assert [line.split("│")[-2].strip() for line in table if "llama_cpp" in line] == ["yes", "yes"], err
    assert main(["models", "check", "m.yaml"]) == 1
    assert "assembling" not in capsys.readouterr().err  # once


def test_check_names_an_hf_folder_on_llama_cpp_a_folder(tiny_model: dict[str, Path], in_tmp: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """An HF folder with `backend: llama_cpp` was "GGUF file not found: .../tiny" although the path exists."""
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "tiny")
    (in_tmp / "m.yaml").write_text("models:\n  t: {file: tiny, backend: llama_cpp}\n")
    assert main(["models", "check", "m.yaml", "--json"]) == 1
    note = json.loads(capsys.readouterr().out)["models"][0]["note"]
    assert "tiny: is a folder (an HF model), not a GGUF file" in note and "`backend: hf`" in note, note
    assert "not found" not in note


def test_list_names_broken_links_empty_configs_and_escapes_undecodable_names(tiny_model: dict[str, Path],
                                                                             in_tmp: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """A dangling .gguf link was skipped without a word; a folder whose config.json is `{}` was listed as an hf model
    (arch unknown, 0 B); a file name that is not UTF-8 printed as `n\\udce9e.gguf` (breaking the table) and put a
    lone surrogate escape in the JSON. A hidden folder (a model being written) is left out."""
    models = in_tmp / "models"
    (models / "empty-config").mkdir(parents=True)
    (models / "empty-config" / "config.json").write_text("{}")
    (models / "dangling.gguf").symlink_to(in_tmp / "gone.gguf")
    odd = os.fsdecode(b"n\xe9e.gguf")
    shutil.copyfile(tiny_model["gguf"], models / odd)
    shutil.copytree(tiny_model["hf"], models / ".t.abc.partial")
    assert main(["models", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert "\\ud" not in out  # no surrogate escape: the JSON is plain UTF-8
    listed = {Path(m["path"]).name: m for m in json.loads(out) if m["format"] != "builtin"}
    assert set(listed) == {"empty-config", "dangling.gguf", "n\\xe9e.gguf"}, listed
    assert listed["n\\xe9e.gguf"]["format"] == "gguf"
    assert listed["empty-config"]["format"] == "unreadable" and "names no model" in listed["empty-config"]["error"]
    assert listed["dangling.gguf"]["format"] == "unreadable" and "broken link" in listed["dangling.gguf"]["error"]
    assert main(["models", "list"]) == 0
    err = capsys.readouterr().err
    assert "n\\xe9e.gguf" in err and "\\udce9" not in err and "\udce9" not in err
    assert "unreadable: models/dangling.gguf: a broken link" in err
    assert "empty-config/config.json: names no model" in err
    assert ".t.abc" not in err


def test_check_and_list_an_hf_folder_that_names_its_sizes_otherwise(tiny_model: dict[str, Path], in_tmp: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """A folder whose config.json spells its sizes as GPT-2 does (n_embd, n_layer, n_head) crashed `models check`
    ("internal error: KeyError: 'num_attention_heads'", exit 1), and so did one that gives no sizes at all (KeyError:
    'hidden_size'); `models list` showed its layers as `-`. The first is sized; the second is its row with needs `-`
    and a note naming config.json and the keys looked for."""
    for name, config in (("gpt2", {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64,
                                   "n_layer": 2, "n_head": 2, "n_positions": 128, "vocab_size": 100,
                                   "torch_dtype": "float32"}),
                         ("sizeless", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})):
        shutil.copytree(tiny_model["hf"], in_tmp / "mdir" / name, ignore=shutil.ignore_patterns("*.gguf"))
        (in_tmp / "mdir" / name / "config.json").write_text(json.dumps(config))
    (in_tmp / "m.yaml").write_text("models_directory: .\nmodels:\n  g: {file: mdir/gpt2, backend: hf}\n"
                                   "  s: {file: mdir/sizeless}\n")
    assert main(["models", "check", "m.yaml", "--json"]) == 1  # s is required and cannot be sized
    by_name = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert by_name["g"]["ok"] and by_name["g"]["estimate"]["total_bytes"] > 0 and by_name["g"]["fits"]
    assert by_name["s"]["estimate"] is None and not by_name["s"]["ok"]
    assert "mdir/sizeless/config.json: no hidden_size (nor n_embd, d_model)" in by_name["s"]["note"]
    assert main(["models", "check", "m.yaml"]) == 1
    err = capsys.readouterr().err
    assert "internal error" not in err and "g: " in err and "no hidden_size" in " ".join(err.split())

    assert main(["models", "list", "mdir", "--json"]) == 0
    listed = {Path(m["path"]).name: m for m in json.loads(capsys.readouterr().out) if m["format"] != "builtin"}
    assert (listed["gpt2"]["n_layers"], listed["gpt2"]["n_ctx_train"], listed["sizeless"]["n_layers"]) == (2, 128, None)


def test_list_names_a_config_without_weights_or_with_a_bad_size_unreadable(tiny_model: dict[str, Path],
                                                                            in_tmp: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    """A folder holding only a config.json was listed as an hf model of 0 B (with `"num_hidden_layers": "x"`, of `x`
    layers) though export-hf refuses it ("no weights"); an unreadable GGUF was named by its absolute path beside the
    relative paths of everything else. A folder whose weights are GGUF files beside a config.json is theirs: the
    GGUFs are listed, the folder is not called unreadable."""
    models = in_tmp / "models"
    (models / "config-only").mkdir(parents=True)
    (models / "config-only" / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": "x"}')
    shutil.copytree(tiny_model["hf"], models / "bad-size", ignore=shutil.ignore_patterns("*.gguf"))
    (models / "bad-size" / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": "x"}')
    (models / "gguf-repo").mkdir()
    (models / "gguf-repo" / "config.json").write_text('{"model_type": "llama"}')
    shutil.copyfile(tiny_model["gguf"], models / "gguf-repo" / "model.gguf")
    (models / "fake.gguf").write_text("not a gguf")
    assert main(["models", "list", "--json"]) == 0
    listed = {m["path"]: m for m in json.loads(capsys.readouterr().out) if m["format"] != "builtin"}
    assert {path: m["format"] for path, m in listed.items()} == {
        "models/config-only": "unreadable", "models/bad-size": "unreadable", "models/fake.gguf": "unreadable",
        "models/gguf-repo/model.gguf": "gguf"}
    assert listed["models/config-only"]["error"].startswith("models/config-only: no weights (none of model.safetensors")
    assert listed["models/bad-size"]["error"] == \
        'models/bad-size/config.json: num_hidden_layers is "x", not a positive whole number'
    assert listed["models/fake.gguf"]["error"].startswith("models/fake.gguf: not a readable GGUF file")
    assert main(["models", "list"]) == 0
    err = capsys.readouterr().err
    assert "unreadable: models/fake.gguf: not a readable GGUF file" in err and str(in_tmp) not in err
    assert "unreadable: models/config-only: no weights" in err and "│x " not in err


def test_check_notes_an_n_ctx_above_the_training_context(tiny_model: dict[str, Path], in_tmp: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """n_ctx above the GGUF's context_length (512 for make-tiny's model) got no word: a KV cache sized for positions
    the model was never trained on. Noted, still ok."""
    shutil.copytree(tiny_model["hf"], in_tmp / "models" / "tiny")
    (in_tmp / "models.yaml").write_text("models_directory: models\nmodels:\n"
                                        "  long: {file: tiny/model.gguf, overrides: {n_ctx: 1024}}\n"
                                        "  fine: {file: tiny/model.gguf, overrides: {n_ctx: 512}}\n"
                                        "  hf: {file: tiny, backend: hf, overrides: {n_ctx: 1024}}\n"
                                        "  hf64: {file: tiny, backend: hf, overrides: {n_ctx: 64}}\n")
    said = ("n_ctx 1024 is above its training context 512: past 512 the model is not trained and the extra memory "
            "buys nothing")
    assert main(["models", "check", "models.yaml", "--json"]) == 0
    by_name = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert said in by_name["long"]["note"] and by_name["long"]["ok"]
    assert "training context" not in by_name["fine"]["note"] and by_name["fine"]["ok"]
    # the hf backend's context is the model's own whatever n_ctx says: no note, and its estimate at 512 (was 1024)
    assert "training context" not in by_name["hf"]["note"] and by_name["hf"]["ok"]
    assert "at n_ctx 512 " in by_name["hf"]["estimate"]["describe"]
    assert "at n_ctx 512 " in by_name["hf64"]["estimate"]["describe"]  # below it too: it said 64
    assert main(["models", "check", "models.yaml"]) == 0
    assert f"long: {said}" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("args, says", [
    (["make-tiny", "m\udce9m"], "OUT: not UTF-8 text (byte 0xe9 at character 2)"),
    (["export-hf", "smollm2-135m", "--out", "o\udce9"], "--out: not UTF-8 text (byte 0xe9 at character 2)"),
])
def test_a_model_folder_named_with_a_byte_that_is_not_utf8_is_refused(args: list[str], says: str, in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """`make-tiny "$(printf 'm\\xe9m')"` built the model, then ended in "internal error: UnicodeEncodeError ...
    surrogates not allowed", exit 1: `models` reads such names (list, check), but these two write them."""
    assert main(["models", *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {says}" in err and "internal error" not in err, err
    assert "run folder" not in err  # models makes none: the hint does not say it keeps its arguments in one
    assert not list(in_tmp.iterdir())
    assert main(["models", "list", "n\udce9e"]) == 2  # read-only: the name is read (not found), not refused as text
    assert "not UTF-8 text" not in capsys.readouterr().err


def test_a_refusal_before_the_command_runs_is_one_line_under_agentlab_debug(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With AGENTLAB_DEBUG=1 the not-UTF-8 refusal (no exception being handled) crashed in rich's print_exception
    ("Value for 'trace' required")."""
    monkeypatch.setenv("AGENTLAB_DEBUG", "1")
    assert main(["models", "make-tiny", "m\udce9m"]) == 2
    err = capsys.readouterr().err
    assert "error: OUT: not UTF-8 text" in err and "Traceback" not in err and "trace" not in err, err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder where no file can be made")
def test_export_hf_where_nothing_can_be_written_is_refused_before_the_model_is_read(
        in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """`export-hf models/tiny-a/model.gguf --out /proc/x` converted the model, then failed naming its hidden
    temporary folder (`/proc/.x.aj3vo0u9`), exit 1."""
    from agentlab.core.models import export

    def resolved(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was resolved before --out was checked")

    monkeypatch.setattr(export, "resolve_model", resolved)
    assert main(["models", "export-hf", "smollm2-135m", "--out", "/proc/x"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: --out /proc/x: cannot write in /proc (" in err and "nothing was written" in err, err
    assert "/proc/." not in err
    (in_tmp / "afile.txt").write_text("mine")
    assert main(["models", "export-hf", "smollm2-135m", "--out", "afile.txt/sub"]) == 2
    assert "error: --out afile.txt/sub: afile.txt is a file, not a folder" in capsys.readouterr().err
    assert main(["models", "export-hf", "smollm2-135m", "--out", "afile.txt"]) == 2
    assert "error: --out afile.txt: is a file, not a transformers model folder" in capsys.readouterr().err
    assert (in_tmp / "afile.txt").read_text() == "mine"


def test_make_tiny_under_a_file_says_the_file_is_in_the_way(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`make-tiny afile.txt/sub` said "afile.txt/sub: cannot create the folder (File exists)"."""
    (in_tmp / "afile.txt").write_text("mine")
    for out in ("afile.txt/sub", "afile.txt/sub/deeper"):
        assert main(["models", "make-tiny", out]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"error: {out}: afile.txt is a file, not a folder; nothing was written" in err, err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["afile.txt"]


def test_export_hf_of_an_empty_name_says_it_is_empty(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """It said "not found; tried a transformers model folder (CWD has no config.json)" and ended its hint with
    "or a .gguf file:  has no config.json"; `--out ''` was taken for the current folder."""
    assert main(["models", "export-hf", "", "--out", "e1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: the model name is empty" in err and "has no config.json" not in err, err
    assert main(["models", "export-hf", "smollm2-135m", "--out", ""]) == 2
    assert "Invalid value for '--out': empty; give a folder path" in capsys.readouterr().err
    assert not list(in_tmp.iterdir())


def test_check_refuses_an_empty_models_file_name(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`models check ''` said ".: is a folder, not a models file"."""
    for args, name in (([""], "'models_file'"), (["-c", ""], "'-c' / '--config'")):
        assert main(["models", "check", *args]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"Invalid value for {name}: empty; give the models YAML file" in err, err
        assert "is a folder" not in err


def test_a_gguf_of_no_layers_is_unreadable_in_list_and_check(tiny_model: dict[str, Path], in_tmp: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """A GGUF with block_count 0 (make_tiny_model(layers=0) wrote one) was listed as a model: loading it aborts
    llama.cpp, the whole process (SIGABRT)."""
    import gguf
    import numpy as np

    (in_tmp / "models").mkdir()
    writer = gguf.GGUFWriter(str(in_tmp / "models" / "empty.gguf"), "llama")
    writer.add_block_count(0)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shutil.copyfile(tiny_model["gguf"], in_tmp / "models" / "good.gguf")
    assert main(["models", "list", "--json"]) == 0
    listed = {m["path"]: m for m in json.loads(capsys.readouterr().out) if m["format"] != "builtin"}
    assert listed["models/good.gguf"]["format"] == "gguf"
    assert listed["models/empty.gguf"]["format"] == "unreadable"
    assert listed["models/empty.gguf"]["error"].startswith(
        "models/empty.gguf: not a loadable GGUF model (llama.block_count is 0, not a positive whole number)")
    (in_tmp / "m.yaml").write_text("models_directory: models\nmodels:\n  e: {file: empty.gguf}\n")
    assert main(["models", "check", "m.yaml", "--json"]) == 1
    [status] = json.loads(capsys.readouterr().out)["models"]
    assert status["unreadable"] and "llama.block_count is 0" in status["note"]


def _two_folders(root: Path) -> tuple[Path, Path]:
    """An old model folder `m` and a finished new one beside it, as make-tiny --force and export-hf --force have."""
    for name in ("m", ".m.new"):
        (root / name).mkdir()
        (root / name / "config.json").write_text(name)
    return root / ".m.new", root / "m"


def test_ctrl_c_while_a_model_folder_is_replaced_leaves_a_model_at_out(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       sigint_raises: None) -> None:
    """--force moved the old model aside, then renamed the new one into place: a Ctrl-C between the two renames
    deleted the new model and left the old one only as the hidden `.m.old`, nothing at `m`. The interrupt now comes
    once the new model is in place."""
    import signal

    from agentlab.core.files import rename_into_place

    new, out = _two_folders(in_tmp)
    real = Path.rename

    def rename(self: Path, target: Any) -> Any:
        moved = real(self, target)
        if self == out:  # the old model is aside: Ctrl-C now
            os.kill(os.getpid(), signal.SIGINT)
        return moved

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        rename_into_place(new, out)
    assert (out / "config.json").read_text() == ".m.new"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["m"]  # nothing aside or half-renamed left


def test_a_model_folder_that_cannot_be_renamed_into_place_puts_the_old_one_back(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentlab.core.files import rename_into_place

    new, out = _two_folders(in_tmp)
    real = Path.rename

    def rename(self: Path, target: Any) -> Any:
        if self == new:
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError):
        rename_into_place(new, out)
    assert (out / "config.json").read_text() == "m"
    assert sorted(p.name for p in in_tmp.iterdir()) == [".m.new", "m"]  # make-tiny's caller deletes .m.new
