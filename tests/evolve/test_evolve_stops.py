"""`agentlab evolve run` stopped early: the seeds' reference debate is recorded however the run stops (bad input
alone removes the run), a resume checks the population a stopped run kept (a 0-byte one is refused, a changed seed
too) and keeps its own record once it changes the population; bad input that removes a new run removes only what it
made in a store (a study another process added stays; a URL with a query names its file); a journal store in a
folder that does not exist is refused before any run folder is made."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("optuna")

from evolve_config import write_config  # noqa: E402  (tests/evolve/evolve_config.py)

from agentlab.cli import main  # noqa: E402
from agentlab.core.errors import AgentlabError  # noqa: E402

evolve_run = importlib.import_module("agentlab.evolve.run")  # the package's `run` is the function


def kinds(run: Path) -> list[str]:
    path = run / "events.jsonl"
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()] if path.is_file() else []


class Stopped:
    """The search loop stopped by Ctrl-C at its first step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run(self) -> None:
        raise KeyboardInterrupt


@pytest.mark.parametrize("stop,code", [(KeyboardInterrupt, 130), (AgentlabError, 1)], ids=["ctrl-c", "failure"])
def test_a_stop_while_gen_0_is_bred_records_the_reference_debate(
        stop: type[BaseException], code: int, in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The debate's event was held until gen_0 was bred while the store kept the debate at once: a Ctrl-C or a
    failure there left it unrecorded for good (a resume found the debate stored), and a resume, seeing no event,
    checked neither its population nor its seeds."""
    from safetensors.torch import load_file, save_file

    mine = in_tmp / "seeds"
    for name in seeds:
        shutil.copytree(seeds[name], mine / name)
    config, run = write_config(in_tmp, tiny_model, {n: mine / n for n in seeds}), in_tmp / "RUN"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise stop("stopped while breeding")

    with monkeypatch.context() as patch:
        patch.setattr(evolve_run, "_make_child", broken)
        assert main(["evolve", "run", "-c", str(config), "--out", str(run)]) == code
    assert kinds(run).count("reference") == 1, kinds(run)
    # a seed retrained since: the resume checks the seeds the debate was made from
    weights = mine / "persona_c" / "adapter_model.safetensors"
    kept_weights = weights.read_bytes()
    save_file({k: v * 2 for k, v in load_file(weights).items()}, weights)
    capsys.readouterr()
    assert main(["evolve", "run", "--resume", str(run)]) == 2
    assert "a seed adapter changed on disk since the run started (persona_c " in capsys.readouterr().err
    # ... and so it does when a kill left no event (the population holds the debate): the next session records it
    (run / "events.jsonl").unlink()
    assert main(["evolve", "run", "--resume", str(run)]) == 2
    assert "a seed adapter changed on disk since the run started (persona_c " in capsys.readouterr().err
    weights.write_bytes(kept_weights)
    monkeypatch.setattr(evolve_run, "evolve_loop", Stopped)
    assert main(["evolve", "run", "--resume", str(run)]) == 130
    assert kinds(run) == ["reference"]
    # a population of 0 bytes is as gone as a missing one: refused before anything opens it, the file left as it is
    (run / "population.db").write_bytes(b"")
    assert main(["evolve", "run", "--resume", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{run / 'population.db'}: the population of {run} is empty (0 bytes) (it holds what the run scored)" \
        in err, err
    assert (run / "population.db").stat().st_size == 0


def test_bad_input_in_gen_0_leaves_no_reference_event_nor_folder(in_tmp: Path, tiny_model: dict[str, Path],
                                                                  seeds: dict[str, Path]) -> None:
    """Bad input (exit 2) while breeding gen_0 still removes the new run: the held event is not recorded."""
    config = write_config(in_tmp, tiny_model, seeds, search="random", generations=0, weight_range=[1e300, 2e300])
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 2
    assert not (in_tmp / "RUN").exists()


def test_a_resume_stopped_in_its_search_loop_keeps_its_record(in_tmp: Path, tiny_model: dict[str, Path],
                                                              seeds: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop changes the population from its first step (claims back to the queue, a generation bred): a
    resume stopped there before its first event was undone as one that did nothing (run.json as before)."""
    monkeypatch.setattr(evolve_run, "evolve_loop", Stopped)
    config, run = write_config(in_tmp, tiny_model, seeds, fitness={"coop": 0.0}), in_tmp / "RUN"
    assert main(["evolve", "run", "-c", str(config), "--out", str(run)]) == 130
    assert main(["evolve", "run", "--resume", str(run)]) == 130
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and len(info["resumed"]) == 1, info


def test_bad_input_keeps_a_study_another_process_added_to_the_store_the_run_made(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A store file the run made was unlinked whole, with a study another process added to it meanwhile."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    config = _not_finite(in_tmp, tiny_model, seeds)
    make_child = evolve_run._make_child
    journal = in_tmp / "pop.journal"

    def meanwhile(*args: Any, **kwargs: Any) -> Any:  # another process adds its study, then the child overflows
        optuna.create_study(study_name="other", storage=JournalStorage(JournalFileBackend(str(journal))))
        return make_child(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(evolve_run, "_make_child", meanwhile)
        assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN"), "--store", str(journal)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and err[0].endswith(f"the run folder {in_tmp / 'RUN'} was removed, and the population it "
                                             f"made in the store {journal}"), err
    assert optuna.get_all_study_names(JournalStorage(JournalFileBackend(str(journal)))) == ["other"]


def _not_finite(in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path]) -> Path:
    return write_config(in_tmp, tiny_model, seeds, search="random", generations=0, fitness={"coop": 0.0},
                        weight_range=[1e300, 2e300])


def test_bad_input_removes_the_sqlite_store_it_made_named_with_a_query(in_tmp: Path, tiny_model: dict[str, Path],
                                                                       seeds: dict[str, Path], capsys: Any) -> None:
    """``sqlite:///x.db?timeout=30``: the store was said removed and left (its query taken for the file's name)."""
    config = _not_finite(in_tmp, tiny_model, seeds)
    url = f"sqlite:///{in_tmp / 'pop.db'}?timeout=30"
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN"), "--store", url]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and err[0].endswith(f", and the store {url} it made"), err
    assert not (in_tmp / "pop.db").exists() and not (in_tmp / "RUN").exists()


def test_bad_input_in_an_empty_out_folder_says_the_runs_files_went_not_the_folder(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], capsys: Any) -> None:
    """An empty --out folder the user made stays: it was said removed."""
    config = _not_finite(in_tmp, tiny_model, seeds)
    (in_tmp / "mine").mkdir()
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "mine")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and err[0].endswith(f"; nothing was recorded: the run's files were removed from "
                                             f"{in_tmp / 'mine'}"), err
    assert list((in_tmp / "mine").iterdir()) == []


def test_a_journal_store_in_a_folder_that_does_not_exist_is_refused_before_the_run_folder(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], capsys: Any) -> None:
    """nas refused it before its run folder existed; evolve made the run folder first (and removed it again)."""
    config, store = write_config(in_tmp, tiny_model, seeds), in_tmp / "no" / "dir" / "pop.journal"
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN"), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith(f"its folder {in_tmp / 'no' / 'dir'} does not exist"), err
    assert "hint: create the folder first" in err and "run folder:" not in err and "Traceback" not in err
    assert not (in_tmp / "no").exists() and not (in_tmp / "RUN").exists()
