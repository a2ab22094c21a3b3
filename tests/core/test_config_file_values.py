"""A config file's values as YAML reads them: what a field got (``null``, ``true``, a date), the quoting that gives
text, the line of a YAML error at the end of the file or of a top level that is no mapping, tags a config does not
take, a key that is no text."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from agentlab.core.config import StrictModel, load_config, parse_override
from agentlab.core.errors import ConfigError


class Train(StrictModel):
    epochs: int = Field(1, description="epochs")
    tags: list[str] = Field(default_factory=list, description="tags")


class Cfg(StrictModel):
    name: str = Field("exp", description="run name")
    train: Train = Field(default_factory=Train, description="training")


def refused(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, Cfg, schema="nas")
    return info.value


@pytest.mark.parametrize(("value", "got"), [
    ("yes", "true"), ("null", "null"), ("", "null"), ("2024-01-02", "the date 2024-01-02"), ("12", "the int 12")])
def test_a_file_value_yaml_reads_as_no_text_says_what_it_got_and_how_to_quote_it(tmp_path: Path, value: str,
                                                                                 got: str) -> None:
    """`name: yes` said "(got True)" with no hint, `name: 2024-01-02` not even what it got; --set's value had both."""
    error = refused(tmp_path, f"# agentlab nas\nname: {value}\n")
    assert error.message == (f"{tmp_path / 'cfg.yaml'}:2: name: Input should be a valid string (got {got}: YAML "
                             f'reads it unquoted; to give it as text, quote it in the file: name: "{value}")')
    item = refused(tmp_path, f"train:\n  tags:\n    - {value or 'null'}\n")
    assert item.message.endswith(f'quote it in the file: - "{value or "null"}")')


def test_a_null_where_a_number_belongs_says_null(tmp_path: Path) -> None:
    """`train: {epochs: null}` said "Input should be a valid integer" and nothing of the null."""
    error = refused(tmp_path, "train: {epochs: null}\n")
    assert error.message == f"{tmp_path / 'cfg.yaml'}:1: train.epochs: Input should be a valid integer (got null)"
    set_error = pytest.raises(ConfigError, load_config, None, Cfg, ["name=yes"]).value  # --set: its own hint
    assert set_error.message == ("--set name=yes: name: Input should be a valid string (got true; --set reads its "
                                 "value as YAML: to give it as text, quote it: --set 'name=\"yes\"')")


@pytest.mark.parametrize("text", ["# agentlab nas\nname: [unclosed\n", "# agentlab nas\nname: [unclosed\n\n# end\n\n",
                                  '# agentlab nas\nname: "unclosed\n'])
def test_invalid_yaml_at_the_end_of_the_file_names_its_last_line(tmp_path: Path, text: str) -> None:
    """An error met at the end of the file named the line after it (`:3:` of a file of 2 lines)."""
    assert refused(tmp_path, text).message.startswith(f"{tmp_path / 'cfg.yaml'}:2: invalid YAML: ")


@pytest.mark.parametrize(("text", "line"), [("# agentlab nas\n\n- a\n- b\n", 3), ("# agentlab nas\n---\nwords\n", 3)])
def test_a_top_level_that_is_no_mapping_names_the_line_where_it_starts(tmp_path: Path, text: str,
                                                                       line: int) -> None:
    """It was `:1` whatever the file, a comment line at that."""
    assert refused(tmp_path, text).message.startswith(f"{tmp_path / 'cfg.yaml'}:{line}: the top level must be a "
                                                      "mapping")


@pytest.mark.parametrize(("value", "tag"), [("!!python/object:os.system {}", "!!python/object:os.system"),
                                            ("!!binary aGVsbG8=", "!!binary"), ("!!set {a, b}", "!!set"),
                                            ("!!omap [{a: 1}]", "!!omap"), ("!custom 1", "!custom")])
def test_a_tag_a_config_does_not_take_is_refused_by_name(tmp_path: Path, value: str, tag: str) -> None:
    """`!!binary` was read (bytes became the run's name); `!!python/...` was "fix the YAML syntax at that line"."""
    error = refused(tmp_path, f"# agentlab nas\ntrain:\n  tags: {value}\n")
    assert error.message == (f"{tmp_path / 'cfg.yaml'}:3: the YAML tag {tag} is not supported: a config takes plain "
                             "values (text, numbers, true/false, lists, mappings)")
    assert "remove the tag" in (error.hint or "")
    bare = refused(tmp_path, "name: =\n")  # YAML's !!value, untagged
    assert bare.message.endswith("cfg.yaml:1: a bare '=' is no value a config takes (YAML reads it as its !!value tag)")


def test_plain_tags_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("name: !!str 12\nbase: &b {epochs: 3}\ntrain:\n  <<: *b\n  tags: !!seq [a]\n")
    with pytest.raises(ConfigError, match="base: unknown key"):  # read, and only the extra key is refused
        load_config(path, Cfg)
    path.write_text("name: !!str 12\ntrain:\n  epochs: !!int 3\n  tags: !!seq [a]\n")
    cfg = load_config(path, Cfg)
    assert (cfg.name, cfg.train.epochs, cfg.train.tags) == ("12", 3, ["a"])


@pytest.mark.parametrize(("text", "where"), [("1: 2\n", ":1: 1: "), ("train:\n  true: 2\n", ":2: train.true: ")])
def test_a_key_that_is_no_text_is_named_as_a_field(tmp_path: Path, text: str, where: str) -> None:
    """`1: 2` said `[1]: Keys should be strings (got 1)`: the key as a list index."""
    error = refused(tmp_path, text)
    assert error.message.startswith(f"{tmp_path / 'cfg.yaml'}{where}Keys should be strings")
    assert "[1]" not in error.message


@pytest.mark.parametrize(("item", "message"), [
    ("name=!!binary aGVsbG8=", "--set name=...: the YAML tag !!binary is not supported"),
    ("train.tags=!!python/name:os.system", "--set train.tags=...: the YAML tag "
                                           "!!python/name:os.system is not supported"),
    ("api_key=!!python/name:sk-abc123", "--set api_key=...: the value is none a config takes"),
])
def test_a_set_value_takes_the_tags_a_file_takes(tmp_path: Path, item: str, message: str) -> None:
    """`--set name=!!binary ...` made the run's name from bytes (a file refuses the tag); `!!python/...` became text.
    A value that may be a secret is not shown, nor its tag."""
    with pytest.raises(ConfigError) as info:
        parse_override(item)
    assert info.value.message.startswith(message)
    assert "sk-abc123" not in info.value.message + (info.value.hint or "")
    assert parse_override("name=!!str 12") == (["name"], "12")


@pytest.mark.parametrize(("item", "value"), [("topic=!important", "!important"), ("sep==", "="),
                                             ("api_key=!Xy9secret", "!Xy9secret")])
def test_a_set_value_with_a_tag_yaml_would_not_build_stays_text(item: str, value: str) -> None:
    """A local tag or a bare `=` was always the text as typed (the file's refusal of them is not for --set)."""
    assert parse_override(item)[1] == value


def test_a_set_value_whose_aliases_explode_is_refused_before_any_other_reading() -> None:
    """The label was built first, from a full expansion (seconds at six levels, ten times more a level)."""
    bomb = "[" + ", ".join(["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]) + "]"
    with pytest.raises(ConfigError, match=r"^--set train\.tags=\.\.\.: the aliases \(\*name\) here expand"):
        parse_override(f"train.tags={bomb}")
