"""load_config: precedence, interpolation, and errors that name file, line and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, field_validator, model_validator

from agentlab.core.config import StrictModel, describe_model, load_config, redact
from agentlab.core.errors import ConfigError, UsageError
from agentlab.core.llm.config import LLMConfig


class Model(StrictModel):
    d_model: int = Field(64, description="width")
    n_heads: int = Field(4, description="heads")

    @model_validator(mode="after")
    def _heads(self) -> Model:
        if self.d_model % self.n_heads:
            raise ValueError(f"model.n_heads: must divide model.d_model ({self.d_model} % {self.n_heads} != 0)")
        return self


class Train(StrictModel):
    lr: float = Field(1e-3, description="learning rate")
    tags: list[str] = Field(default_factory=list, description="tags")

    @field_validator("lr")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


class Cfg(StrictModel):
    name: str = Field("exp", description="run name")
    model: Model = Field(default_factory=Model, description="model")
    train: Train = Field(default_factory=Train, description="training")
    url: str = Field("http://x", description="url")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    cfg = load_config(None, Cfg)
    assert cfg.model.d_model == 64 and cfg.train.lr == 1e-3


def test_precedence_defaults_yaml_then_set(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nmodel:\n  d_model: 128\n")
    cfg = load_config(path, Cfg, ["model.n_heads=8", "train.lr=5e-4", "train.tags=[x, y]", "name=b"])
    assert (cfg.name, cfg.model.d_model, cfg.model.n_heads) == ("b", 128, 8)
    assert cfg.train.lr == 5e-4 and cfg.train.tags == ["x", "y"]


def test_typo_key_names_file_line_field_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nmodel:\n  d_model: 128\n  n_haeds: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg)
    assert f"{path}:4: model.n_haeds: unknown key (did you mean 'n_heads'?)" in info.value.message
    assert info.value.exit_code == 2
    assert info.value.hint == "fix the field(s) above"  # no schema named: no `config show` to point at
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg, schema="nas")
    assert info.value.hint == "fix the field(s) above; `agentlab config show nas` lists every field with its meaning"


def test_wrong_type_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: fast\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg)
    assert info.value.message.startswith(f"{path}:2: train.lr:")
    assert "'fast'" in info.value.message


def test_a_value_where_a_section_belongs_says_what_the_section_holds() -> None:
    """`--set search=3` said "Input should be a valid dictionary or instance of CompressSearch": a class name no
    config or page shows."""
    class Maps(StrictModel):
        model: Model = Field(default_factory=Model, description="model")
        extra: dict[str, int] = Field(default_factory=dict, description="anything")

    with pytest.raises(ConfigError) as info:
        load_config(None, Maps, ["model=3", "extra=[1]"])
    assert info.value.message.splitlines() == [
        "--set model=3: model: Input should be a mapping of settings (model.d_model, model.n_heads) (got 3)",
        "--set extra=[1]: extra: Input should be a mapping, as {key: value}"]
    from agentlab.compress import CompressConfig  # a command's own section, as the report met it

    with pytest.raises(ConfigError, match=r"search: Input should be a mapping of settings \(search\.history, "):
        load_config(None, CompressConfig, ["search=3"])


def test_a_boolean_for_a_number_is_refused_not_read_as_1(tmp_path: Path) -> None:
    """pydantic's lax mode reads `true` as 1 for an int or float: `port: true` served on port 1."""
    class Mixed(StrictModel):
        flag: bool | int = Field(0, description="a switch or a count")
        anything: Any = Field(None, description="anything")
        size: int | str = Field(0, description="a number or a word")

    for text, line, field in [("model:\n  d_model: true\n", 2, "model.d_model"), ("train:\n  lr: false\n", 2,
                                                                                   "train.lr")]:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text), Cfg)
        assert info.value.message.startswith(f"{tmp_path / 'cfg.yaml'}:{line}: {field}: expected a number, got ")
    with pytest.raises(ConfigError, match="--set model.n_heads=true: model.n_heads: expected a number, got true"):
        load_config(None, Cfg, ["model.n_heads=true"])
    assert load_config(write(tmp_path, "flag: true\nanything: true\n"), Mixed).flag is True
    with pytest.raises(ConfigError, match=r"cfg.yaml:1: size: expected a number, got true"):  # not its word as text
        load_config(write(tmp_path, "size: true\n"), Mixed)
    with pytest.raises(ConfigError) as info:  # every error of the section, not the first boolean's alone
        load_config(write(tmp_path, "model:\n  d_model: true\n  n_heads: false\n  bogus: 1\n"), Cfg)
    assert "cfg.yaml:3: model.n_heads: expected a number, got false" in info.value.message
    assert "cfg.yaml:4: model.bogus: unknown key" in info.value.message


def test_a_flag_and_a_set_of_the_same_key_with_different_values_are_refused() -> None:
    """`--set train.lr=abc --lr 0.1`: the flag would win and the --set be ignored without a word."""
    from agentlab.core.config import Flag

    with pytest.raises(ConfigError) as info:
        load_config(None, Cfg, ["train.lr=abc", Flag("--lr", "train.lr", 0.1)])
    assert info.value.message == "--lr 0.1 and --set train.lr=abc: both set train.lr, to different values"
    assert load_config(None, Cfg, ["train.lr=0.1", Flag("--lr", "train.lr", 0.1)]).train.lr == 0.1  # the same: fine
    assert load_config(None, Cfg, ["train.lr=1e-4", Flag("--lr", "train.lr", 1e-4)]).train.lr == 1e-4  # YAML's str
    assert load_config(None, Cfg, ["name=0.5", Flag("--name", "name", "0.5")]).name == "0.5"
    assert load_config(None, Cfg, ["train.lr=0.2", "train.lr=0.1"]).train.lr == 0.1  # --set twice: the last


def test_cross_field_validator_points_at_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  d_model: 512\n  n_heads: 7\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg)
    assert info.value.message == f"{path}:3: model.n_heads: must divide model.d_model (512 % 7 != 0)"


def test_set_override_error_names_the_override(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg, ["train.lr=-1"])
    assert "--set train.lr=-1: train.lr: must be > 0" in info.value.message


def test_an_unknown_key_only_an_override_made_names_the_override(tmp_path: Path) -> None:
    """``--set nosuch.deep=1`` makes the unknown key ``nosuch``: the error names that override, not "config"; a key
    the file itself holds is still placed at its line."""
    path = write(tmp_path, "train:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg, ["nosuch.deep=1"])
    assert info.value.message.startswith("--set nosuch.deep=1: nosuch: unknown key")
    with pytest.raises(ConfigError) as info:
        load_config(None, Cfg, ["nosuch.deep=1"])
    assert info.value.message.startswith("--set nosuch.deep=1: nosuch: unknown key")
    path = write(tmp_path, "nosuch:\n  a: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg, ["nosuch.deep=1"])
    assert info.value.message.startswith(f"{path}:1: nosuch: unknown key")  # the file's key: its name is at fault


def test_an_override_into_a_key_the_file_holds_as_a_scalar_names_the_file(tmp_path: Path) -> None:
    """``train: 5`` in the file with ``--set train.lr=0.1`` (or an option for train.lr): the file's error, not
    silently a fresh ``train`` mapping; an empty ``train:`` takes the override."""
    path = write(tmp_path, "name: a\ntrain: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg, ["train.lr=0.1"])
    assert info.value.message == f"--set train.lr=0.1: train is 5 ({path}:2), not a mapping, so it has no key lr"
    assert load_config(write(tmp_path, "train:\n"), Cfg, ["train.lr=0.1"]).train.lr == 0.1


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, Cfg, ["train.lr"])


def test_env_interpolation_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AL_NAME", "from-env")
    monkeypatch.delenv("AL_URL", raising=False)
    path = write(tmp_path, "name: ${AL_NAME}\nurl: ${AL_URL:-http://127.0.0.1:8080/v1}\n")
    cfg = load_config(path, Cfg)
    assert cfg.name == "from-env" and cfg.url == "http://127.0.0.1:8080/v1"


def test_missing_env_var_names_line_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AL_MISSING", raising=False)
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "name: a\nurl: http://${AL_MISSING}/v1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg)
    assert f"{path}:2: url: environment variable AL_MISSING is not set" == info.value.message
    assert "AL_MISSING" in (info.value.hint or "")


def test_dotenv_is_read_but_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("AL_A=dot-a\nAL_B=dot-b\n")
    monkeypatch.setenv("AL_B", "env-b")
    monkeypatch.delenv("AL_A", raising=False)
    path = write(tmp_path, "name: ${AL_A}\nurl: ${AL_B}\n")
    cfg = load_config(path, Cfg)
    assert (cfg.name, cfg.url) == ("dot-a", "env-b")


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nmodel: [1, 2\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:\d+: invalid YAML"):
        load_config(path, Cfg)


def test_a_tab_in_the_indentation_is_named_as_such(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nmodel:\n\tsize: 2\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: invalid YAML: found character '\\t'") as caught:
        load_config(path, Cfg)
    assert caught.value.hint is not None and "YAML indents with spaces, not tabs" in caught.value.hint


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nope.yaml", Cfg)


def test_an_optional_sections_typo_is_suggested_and_a_number_refused_once(tmp_path: Path) -> None:
    """`objective:` is optional (a model or None): its known keys are still offered; `float | int` refusing a word
    says so once, not once per member."""
    from agentlab.nas.config import NASConfig

    path = write(tmp_path, "objective:\n  command: python t.py\n  metrik: loss\nsearch:\n  space:\n"
                           "    lr: {low: high, high: 0.3}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, NASConfig)
    lines = info.value.message.splitlines()
    assert f"{path}:3: objective.metrik: unknown key (did you mean 'metric'?)" in lines
    assert [line for line in lines if "search.space.lr.low" in line] == [
        f"{path}:6: search.space.lr.low: Input should be a valid number, unable to parse string as a number "
        "(got 'high')"]
    # two letters swapped: the key with those letters, not the first one difflib rates as close (it said 'low')
    path = write(tmp_path, "search:\n  space:\n    lr: {low: 0.1, high: 0.3, lgo: true}\n")
    with pytest.raises(ConfigError, match=r"search.space.lr.lgo: unknown key \(did you mean 'log'\?\)"):
        load_config(path, NASConfig)


def test_llm_config_unknown_model_reference_names_route_line(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  p: {kind: openai, base_url: http://x/v1}\nmodels:\n  a: {provider: p, "
                           "model: m}\nroutes:\n  default:\n    primary: [a, b]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, LLMConfig)
    assert info.value.message.startswith(f"{path}:7: routes.default.primary: unknown model 'b'")


def test_llm_config_discriminated_union_error_points_inside_provider(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  p:\n    kind: openai\n    base_ur: http://x/v1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, LLMConfig)
    assert f"{path}:4: providers.p.base_ur: unknown key (did you mean 'base_url'?)" in info.value.message


def test_repo_llm_yaml_is_valid() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "llm.yaml", LLMConfig)
    assert cfg.route("planner").chain()[0] == "sonnet"
    assert cfg.route("no-such-route") is cfg.routes["default"]


def test_redact_hides_secret_fields_and_values() -> None:
    data = {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "headers": {"Authorization": "Bearer sk-123"},
            "note": "key is sk-123"}
    out = redact(data, ["sk-123"])
    assert out["api_key"] == "***" and out["api_key_env"] == "OPENAI_API_KEY"
    assert out["headers"]["Authorization"] == "***" and "sk-123" not in str(out)


def test_redact_names_a_variable_where_a_credential_came_from_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential read from a secret-looking variable is written as the variable ("Bearer ${NAME}" reads back),
    any other as ***; a provider's credential headers are secret whatever their name, its other headers are not."""
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-abcdef123456")
    monkeypatch.setenv("MY_TOK", "tok-abcdef123456")  # a name that does not look secret: its value is not known
    headers = {"Authorization": "Bearer sk-or-v1-abcdef123456", "X-Auth-Key": "literal-abcdef",
               "Ocp-Apim-Subscription-Key": "${NOT_EXPANDED}x", "Cookie": "session=abc123456",
               "Proxy-Authorization": "Bearer tok-abcdef123456", "X-Title": "agentlab", "X-Max-Tokens": "64",
               "Helicone-Session-Id": "s-1", "HTTP-Referer": "https://example.org"}
    out = redact({"api_key": "sk-or-v1-abcdef123456", "headers": headers, "name_key": "plain"})
    assert out["api_key"] == "${OPENROUTER_API_KEY}"
    assert out["headers"] == {"Authorization": "Bearer ${OPENROUTER_API_KEY}", "X-Auth-Key": "***",
                              "Ocp-Apim-Subscription-Key": "***", "Cookie": "***", "Proxy-Authorization": "***",
                              "X-Title": "agentlab", "X-Max-Tokens": "64", "Helicone-Session-Id": "s-1",
                              "HTTP-Referer": "https://example.org"}
    assert out["name_key"] == "plain"  # outside headers a field ending in "key" is not a credential


def test_describe_model_lists_fields_with_descriptions() -> None:
    text = describe_model(Cfg)
    assert "# learning rate" in text and "lr: 0.001" in text and "model:" in text


def test_duplicate_keys_and_recursive_aliases_are_config_errors(in_tmp: Path) -> None:
    from agentlab.core.errors import ConfigError
    from agentlab.nas.config import NASConfig

    path = in_tmp / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: train.epochs: key given twice \(also on line 2\)"):
        load_config(path, NASConfig)
    path.write_text("base: &b {x: 1}\nmodel:\n  <<: *b\n  <<: *b\n")  # merge keys may repeat
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path, NASConfig)
    path.write_text("name: x\nmodel: &m [1, *m]\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: model\[1\]: an alias that contains itself"):
        load_config(path, NASConfig)


@pytest.mark.parametrize(("text", "problem"), [
    ("", "the config file is empty"), ("# nothing set yet\n", "the config file is empty"),
    ("---\n", "the config file is empty"), ("- 1\n- 2\n", "the top level must be a mapping of keys, got list"),
    ("just words\n", "the top level must be a mapping of keys, got str"),
    ("42\n", "the top level must be a mapping of keys, got int")])
def test_an_empty_or_non_mapping_config_is_refused_with_the_next_step(tmp_path: Path, text: str,
                                                                      problem: str) -> None:
    """Never taken for the defaults: one line naming the file, and the next step."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(path, Cfg, schema="nas")
    assert str(path) in info.value.message and "`agentlab config show nas`" in (info.value.hint or "")


def test_config_show_lists_an_optional_sections_keys_commented_out() -> None:
    """An optional section off by default (nas's objective:) shows its keys, commented out: the output stays
    valid YAML that loads as the defaults."""
    import yaml

    from agentlab.core.config import describe_model
    from agentlab.nas.config import NASConfig

    text = describe_model(NASConfig)
    assert "objective: null\n# objective, as a mapping: these keys\n" in text
    assert "#   command: (required)" in text and "#   direction: minimize" in text
    assert yaml.safe_load(text)["objective"] is None


def test_a_set_past_the_end_of_a_list_says_how_many_items_it_holds() -> None:
    from agentlab.core.config import apply_overrides

    data = {"stages": [{"model": "a"}, {"model": "b"}]}
    with pytest.raises(ConfigError) as info:
        apply_overrides(data, ["stages.5.model=c"])
    assert info.value.message == "--set stages.5.model=c: 'stages.5': no such item ('stages' holds 2, numbered from 0)"
    assert info.value.hint == "give an index from 0 to 1"
    assert apply_overrides(data, ["stages.1.model=c"])["stages"][1] == {"model": "c"}


def test_a_new_dotted_key_of_a_mapping_of_dotted_keys_is_one_key() -> None:
    """`--set 'search.space.train.epochs={low: 5, high: 30}'` beside `train.lr` made a key `train` holding `epochs`
    ("unknown key; known keys: choices, low, ..."); an existing key is still reached through, a scalar still nests."""
    from agentlab.core.config import apply_overrides

    data = {"search": {"space": {"train.lr": {"low": 0.1, "high": 1.0}}}}
    apply_overrides(data, ["search.space.train.epochs={low: 5, high: 30}", "search.space.train.lr.high=2"])
    assert data["search"]["space"] == {"train.lr": {"low": 0.1, "high": 2}, "train.epochs": {"low": 5, "high": 30}}
    plain = {"train": {"lr": 0.1}}
    assert apply_overrides(plain, ["train.sched.kind={a: 1}"]) == {"train": {"lr": 0.1, "sched": {"kind": {"a": 1}}}}


def test_an_option_given_empty_is_named_as_typed() -> None:
    """`--tasks ""` splits to no item: the error named no option (`error: : tasks: ...`)."""
    from agentlab.core.config import Flag

    assert str(Flag("--tasks", "tasks", [])) == "--tasks ''" and str(Flag("--name", "name", "")) == "--name ''"
    assert str(Flag("--tasks", "tasks", ["a", "b"])) == "--tasks a --tasks b"


def test_a_model_given_by_a_relative_path_is_saved_absolute_and_a_name_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model fields of every command that loads a model by name or path: a resume from another folder must load
    the same model (config.yaml is written through absolute_paths)."""
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import absolute_paths
    from agentlab.debate.config import DebateConfig
    from agentlab.eval.config import EvalConfig
    from agentlab.evolve.config import EvolveConfig
    from agentlab.train_persona.config import TrainPersonaConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")  # a transformers folder: what a path resolves to
    (tmp_path / "smollm2-135m").mkdir()  # no model in it: the name stays the built-in's, as resolve_model reads it
    (tmp_path / "models" / "absent").write_text("not a GGUF file")
    for cls, field in [(EvalConfig, "model"), (CompressConfig, "model"), (DebateConfig, "base_model"),
                       (EvolveConfig, "base_model"), (TrainPersonaConfig, "base_model")]:
        assert getattr(absolute_paths(cls(**{field: "models/tiny"})), field) == str(tmp_path / "models" / "tiny")
        for name in ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "models/absent"):
            assert getattr(absolute_paths(cls(**{field: name})), field) == name, (cls, name)
    served = EvalConfig(model="models/tiny", base_url="http://127.0.0.1:8000/v1")  # a name the server serves
    assert absolute_paths(served).model == "models/tiny"


def test_a_relative_sqlite_url_is_saved_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study's storage or an MLflow store as `sqlite:///study.db`: a resume from another folder must open the same
    file, not create an empty one there."""
    from agentlab.core.config import absolute_paths
    from agentlab.nas.config import NASConfig

    monkeypatch.chdir(tmp_path)
    cfg = absolute_paths(NASConfig.model_validate({"search": {"storage": "sqlite:///runs/s.db"},
                                                   "mlflow": "sqlite:///mlflow.db"}))
    assert (cfg.search.storage, cfg.mlflow) == (f"sqlite:///{tmp_path}/runs/s.db", f"sqlite:///{tmp_path}/mlflow.db")
    for kept in ("sqlite:////abs/s.db", "sqlite:///:memory:", "postgresql://user@host/db"):
        assert absolute_paths(NASConfig.model_validate({"search": {"storage": kept}})).search.storage == kept
    journal = absolute_paths(NASConfig.model_validate({"search": {"storage": "runs/trials.log"}})).search.storage
    assert journal == str(tmp_path / "runs" / "trials.log")  # a journal file, made when the search starts
    home = Path("~").expanduser()  # ~ is the home folder for the search as for config.yaml (Optuna does not expand)
    assert NASConfig.model_validate({"search": {"storage": "~/t.log"}}).search.storage == str(home / "t.log")
    assert NASConfig.model_validate({"search": {"storage": "sqlite:///~/s.db"}}).search.storage == \
        f"sqlite:///{home / 's.db'}"


def test_overrides_given_as_one_string_are_refused_clearly(tmp_path: Path) -> None:
    """`overrides="model.d_model=64"` was split into characters: `--set m: expected key.path=value`. A string is one
    clear UsageError, in load_config and in the Python APIs that build on it (nas's, compress's)."""
    from agentlab.core.config import apply_overrides
    from agentlab.core.errors import UsageError

    path = write(tmp_path, "name: a\n")
    expected = "overrides must be a list of strings, e.g. ['train.epochs=1']"
    with pytest.raises(UsageError, match=r"'model\.d_model=64'.*" + re.escape(expected)) as exc:
        load_config(path, Cfg, "model.d_model=64")  # type: ignore[arg-type]
    assert exc.value.exit_code == 2 and "overrides=['train.epochs=1', 'seed=2']" in (exc.value.hint or "")
    from agentlab.compress import run_compression
    from agentlab.nas import run_nas_optimization

    for api in (run_nas_optimization, run_compression):
        with pytest.raises(UsageError, match=r"one string, 'train\.epochs=1'"):
            api(overrides="train.epochs=1", out=tmp_path / "never")  # type: ignore[arg-type]
    assert not (tmp_path / "never").exists()
    with pytest.raises(UsageError, match=re.escape(expected)):
        apply_overrides({}, "name=b")
    with pytest.raises(UsageError, match=r"an item of type dict"):
        load_config(None, Cfg, [{"name": "b"}])  # type: ignore[list-item]
    assert load_config(path, Cfg, ("name=b",)).name == "b"  # any iterable of strings still does
    with pytest.raises(ConfigError, match="--set x: expected key.path=value"):
        load_config(path, Cfg, ["x"])  # one short item is an ordinary bad --set


def test_a_path_that_is_no_path_is_refused_clearly() -> None:
    """`load_config(123, Model)` and `load_config({...}, Model)` raised os.fspath's bare TypeError."""
    from agentlab.core.errors import UsageError

    with pytest.raises(UsageError, match=r"^config 123: not a config file's path \(a str or Path\), but a int"):
        load_config(123, Cfg)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="but a dict") as exc:
        load_config({"name": "b"}, Cfg)  # type: ignore[arg-type]
    assert "base=" in (exc.value.hint or "")
    base = {"name": "b", "train": {"lr": 0.5}}
    assert load_config(None, Cfg, ["train.lr=0.1"], base=base).train.lr == 0.1
    assert base == {"name": "b", "train": {"lr": 0.5}}  # the caller's dict as it was (an override changed it)
    from agentlab.core.config import Flag

    with pytest.raises(UsageError, match="got Flag"):  # one Flag: not iterable ('Flag' object is not iterable)
        load_config(None, Cfg, Flag("--lr", "train.lr", 0.1))  # type: ignore[arg-type]


def test_an_error_a_set_below_the_key_caused_names_the_set_with_the_files_line(tmp_path: Path) -> None:
    """`--set search.space.lr.low=0.5` made search.space.lr's low exceed its high: the error named the file's line
    alone, where nothing is wrong."""
    from agentlab.nas.config import NASConfig

    path = tmp_path / "n.yaml"
    path.write_text("objective:\n  command: python t.py {args}\n  metric: loss\n  params: {lr: 0.01}\nsearch:\n"
                    "  space:\n    lr: {low: 0.001, high: 0.1, log: true}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:7 with --set search.space.lr.low=0.5: search.space.lr: "
                                                    "low (0.5) must not exceed high (0.1)")):
        load_config(path, NASConfig, ["search.space.lr.low=0.5"])
    own = tmp_path / "own.yaml"  # the file's own mistake: its line alone
    own.write_text(path.read_text().replace("0.001", "0.5"))
    with pytest.raises(ConfigError, match=re.escape(f"{own}:7: search.space.lr: low (0.5)")):
        load_config(own, NASConfig)


def test_a_pair_given_as_one_value_says_list_not_tuple(tmp_path: Path) -> None:
    """YAML has lists, not tuples: a `tuple[float, float]` field given `0.5` said "Input should be a valid tuple"."""
    class Ranged(StrictModel):
        span: tuple[float, float] = Field((0.0, 1.0), description="low and high")
        tags: list[str] = Field([], description="words")

    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "span: 0.5\ntags: word\n"), Ranged)
    assert f"{tmp_path / 'cfg.yaml'}:1: span: Input should be a valid list, as [a, b] (got 0.5)" in info.value.message
    assert "cfg.yaml:2: tags: Input should be a valid list (got 'word')" in info.value.message
    assert "tuple" not in info.value.message
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "span: [0.1, 0.2, 0.3]\n"), Ranged)
    assert "cfg.yaml:1: span: List should have at most 2 items after validation, not 3" in info.value.message


def test_a_provider_without_or_with_an_unknown_kind_names_the_kinds(tmp_path: Path) -> None:
    """A provider with no `kind:` said pydantic's "Unable to extract tag using discriminator 'kind'", and one of an
    unknown kind "Input tag ... found using 'kind' does not match any of the expected tags"."""
    path = tmp_path / "llm.yaml"
    path.write_text("providers:\n  p:\n    base_url: http://x\n  q:\n    base_url: http://x\n    kind: openai-ish\n"
                    "  r: {kind: 5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, LLMConfig)
    kinds = "openai, anthropic, scripted, llama_cpp, hf"
    assert err.value.message.splitlines() == [
        f"{path}:2: providers.p: missing `kind:` (one of: {kinds})",
        f"{path}:6: providers.q.kind: unknown kind 'openai-ish' (one of: {kinds})",
        f"{path}:7: providers.r.kind: unknown kind 5 (one of: {kinds})"]


def test_run_names_follow_the_run_folders_rule(tmp_path: Path) -> None:
    """A schema's `name` (``RunName``) refuses what the run folder cannot be named, and only that: `config validate`
    said ok to names the run then refused."""
    from agentlab.core.config import RunName, run_name_problem
    from agentlab.core.errors import RunDirError
    from agentlab.core.runs import new_run_path

    class Named(StrictModel):
        name: RunName = "x"

    for name in ["n" * 100, "n" * 101, ".hidden", "a b", "", "a/b", "a\\b", "tab\there", "line\nbreak", "café",
                 "v1.2_x-y"]:
        try:
            new_run_path("nas", name, tmp_path)
            made = True
        except RunDirError:
            made = False
        assert (run_name_problem(name) is None) == made, name
        if made:
            assert load_config(None, Named, base={"name": name}).name == name
        else:
            with pytest.raises(ConfigError, match=r"name: not usable in a folder name: "):
                load_config(None, Named, base={"name": name})


def test_a_set_of_a_key_that_may_hold_a_secret_is_named_without_its_value(tmp_path: Path) -> None:
    """`--set api_key_env=<a pasted key>` was named with the key in the error ("--set api_key_env=sk-...: ...")."""
    from agentlab.core.config import set_label

    assert set_label("api_key_env=sk-abc-123") == "--set api_key_env=..."
    assert set_label("providers.p.hf_token=hf_x") == "--set providers.p.hf_token=..."
    assert set_label("train.lr=-1") == "--set train.lr=-1"  # the value kept where it is no secret
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "train:\n  lr: 0.1\n"), Cfg, ["train.api_key=sk-abc-123"])
    assert "--set train.api_key=...:" in info.value.message and "sk-abc" not in info.value.message


def test_a_set_is_named_without_its_value_exactly_where_redact_would_hide_it() -> None:
    """set_label had its own pattern: it hid any key ending in `key` (size_key) and showed what `redact` hides
    (authorization, a provider's headers); the empty-key and one-string errors printed the value whole."""
    from agentlab.core.config import override_list, parse_override, set_label

    assert set_label("search.size_key=5") == "--set search.size_key=5"
    assert set_label("key_env=sk-abc-123") == "--set key_env=..."
    assert set_label("llm.api_key_env=OPENAI_API_KEY") == "--set llm.api_key_env=OPENAI_API_KEY"  # a name, no key
    assert set_label("key_env=ABCDEFGHIJKLMNOPQR") == "--set key_env=..."  # 18 characters, no underscore: a key?
    assert set_label("hf_token_env=hf_abcdef") == "--set hf_token_env=..."  # lower case: may be the token
    assert set_label("providers.p.authorization=Bearer sk-abc-123") == "--set providers.p.authorization=..."
    assert set_label("providers.p.headers.X-Auth-Key=sk-abc-123") == "--set providers.p.headers.X-Auth-Key=..."
    assert set_label("providers.p.headers={Cookie: sk-abc-123}") == "--set providers.p.headers=..."
    assert set_label("providers.p.headers={X-Title: me}") == "--set providers.p.headers={X-Title: me}"
    assert set_label("api_key=${OPENAI_API_KEY}") == "--set api_key=${OPENAI_API_KEY}"  # no secret in it
    with pytest.raises(ConfigError) as info:
        parse_override(".api_key_env=sk-abc-123")
    assert "--set .api_key_env=...: empty key" in info.value.message and "sk-abc" not in info.value.message
    with pytest.raises(UsageError) as used:
        override_list("api_key=sk-abc-123")
    assert "'api_key=...'" in used.value.message and "sk-abc" not in used.value.message


def _laughs(levels: int) -> str:
    """A "billion laughs" config: each anchor a list of nine aliases of the one before, 9**levels values in all."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_config_is_refused_at_once_naming_the_file(tmp_path: Path) -> None:
    """Nested anchors took ~25 s (9**6 values; one level more, minutes) to walk before the error; now refused from
    the node graph, each node counted once, with the file and the line where the aliases pass the limit."""
    from agentlab.core.config import MAX_ALIAS_VALUES, config_where

    for levels in (6, 9):  # 9**9 (387 million values): read only if none is walked
        path = write(tmp_path, _laughs(levels))
        with pytest.raises(ConfigError) as info:
            load_config(path, Cfg)
        assert info.value.message == (f"{path}:6: the aliases (*name) here expand to more than "
                                      f"{MAX_ALIAS_VALUES:,} values (anchors nested in anchors: a 'billion laughs' "
                                      "file), not read")
        assert "\n" not in info.value.message and info.value.hint
        assert config_where(path, [], ("a8",)) is None  # its own reader of lines refuses it too


def test_a_config_nested_too_deeply_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    """PyYAML reads nesting by recursion: `[[[[...` 3,000 deep was a RecursionError ("internal error")."""
    path = write(tmp_path, "name: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg)
    assert info.value.message.startswith(f"{path}: nested too deeply to read")


def test_aliases_and_values_a_config_really_has_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit counts what aliases add, not the file's own values: a long list without aliases, and anchors
    reused as configs reuse them, still load."""
    import agentlab.core.config as config

    monkeypatch.setattr(config, "MAX_ALIAS_VALUES", 50)
    tags = ", ".join(f"t{i}" for i in range(200))
    assert len(load_config(write(tmp_path, f"train:\n  tags: [{tags}]\n"), Cfg).train.tags) == 200
    path = write(tmp_path, "x: &t [a, b, c]\ntrain:\n  tags: *t\n")
    monkeypatch.setattr(config, "MAX_ALIAS_VALUES", 3)
    with pytest.raises(ConfigError, match=r"cfg.yaml:1: the aliases .* more than 3 values"):  # the list and its 3
        load_config(path, Cfg)
    monkeypatch.setattr(config, "MAX_ALIAS_VALUES", 4)
    with pytest.raises(ConfigError, match="x: unknown key"):  # read: the file's own mistake is what is named
        load_config(path, Cfg)


def test_a_set_value_yaml_reads_as_a_mapping_or_list_is_shown_as_read(tmp_path: Path) -> None:
    """`--set name=a: b` said "name: Input should be a valid string" without what it got (YAML's {a: b})."""
    with pytest.raises(ConfigError) as info:
        load_config(None, Cfg, ["name=a: b"])
    assert info.value.message == ("--set name=a: b: name: Input should be a valid string (got the mapping {a: b}; "
                                  "--set reads its value as YAML: to give it as text, quote it: --set 'name=\"a: b\"')")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "name: a\n"), Cfg, ["model.d_model=[1, 2]"])
    assert info.value.message.startswith("--set model.d_model=[1, 2]: model.d_model: Input should be a valid "
                                         "integer (got the list [1, 2]; --set reads its value as YAML)")
    assert "quote" not in info.value.message  # text would not do either: no quoting offered
    with pytest.raises(ConfigError) as info:
        load_config(None, Cfg, ["name=null"])
    assert "(got null; --set reads its value as YAML: to give it as text, quote it: --set 'name=\"null\"')" \
        in info.value.message


def test_a_set_value_shown_as_read_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the error would name `--set name=...` (a secret in it) is not shown as read either."""
    monkeypatch.setenv("MY_SERVICE_TOKEN", "sk-abc-123456")
    for value in ("{a: x, password: hunter22}", "[sk-abc-123456]"):
        with pytest.raises(ConfigError) as info:
            load_config(None, Cfg, [f"name={value}"])
        assert info.value.message == "--set name=...: name: Input should be a valid string"


class Bounded(StrictModel):
    lr: float = Field(1e-3, gt=0, description="learning rate")
    mut: float = Field(0.0, ge=0, le=1, description="a probability")


def test_a_nan_against_a_bound_is_said_to_be_no_finite_number(tmp_path: Path) -> None:
    """`--lr nan` said "Input should be greater than 0 (got .nan)", a bound NaN does not break: the words of a field
    that refuses NaN outright (`allow_inf_nan=False`), for every command's config."""
    from agentlab.core.config import nan_bound_message

    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "lr: .nan\nmut: .nan\n"), Bounded)
    assert info.value.message.splitlines() == [f"{tmp_path / 'cfg.yaml'}:1: lr: Input should be a finite number "
                                               "(got .nan)",
                                               f"{tmp_path / 'cfg.yaml'}:2: mut: Input should be a finite number "
                                               "(got .nan)"]
    with pytest.raises(ConfigError, match=r"mut: Input should be less than or equal to 1 \(got 2\)"):
        load_config(None, Bounded, ["mut=2"])  # a number out of bounds keeps pydantic's words
    assert nan_bound_message({"type": "less_than_equal", "input": "nan"}) == "Input should be a finite number"
    assert nan_bound_message({"type": "less_than_equal", "input": "2"}) is None
    assert nan_bound_message({"type": "float_parsing", "input": "nan"}) is None
