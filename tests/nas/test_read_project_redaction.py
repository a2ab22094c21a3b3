"""read_project's redaction of secrets written into the project's files (the planner model may be a remote API): a
value assigned to a name holding the word api_key, token, secret, password or auth, as the docs say; ordinary code
(a tokenizer, max_tokens, an author) is shown as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.nas.config import NASConfig
from agentlab.nas.own_code_agent import project_files, read_project

SECRETS = {  # line -> the secret it holds
    'AUTH = "abcdefghijklmnop"': "abcdefghijklmnop",
    'SECRET_KEY = "django-insecure-abcdef123456"': "django-insecure-abcdef123456",
    'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"': "wJalrXUtnFEMI",
    'token_value = "tv-1234567890"': "tv-1234567890",
    'password = "correct horse battery staple"': "correct horse",
    'headers = {"Authorization": "Bearer sk-live-abcdef123456"}': "sk-live-abcdef123456",
    "api_key: str = 'sk-abc123456789'": "sk-abc123456789",
    'clientSecret = "cs_0123456789"': "cs_0123456789",
    'cfg = {"model": "gpt-4o-mini", "apiKey": "ak-9876543210"}': "ak-9876543210",
    "pw = {'db_password': \"don't tell 1234\"}": "don't tell",
    "# python train.py --hub_token=hf_abcdef1234567": "hf_abcdef1234567",  # a flag: the name right after '-'
    "# python train.py --hub-token=hf_ghijkl7654321": "hf_ghijkl7654321",
    'ARGS = ["--hub_token=hf_mnopqr1234567"]': "hf_mnopqr1234567",
}
YAML_SECRETS = {  # a config file's unquoted values need no digit: a word there is no variable's name
    "password: correcthorsebatterystaple": "correcthorsebatterystaple",
    "api_key: abcdefabcdefabcdef": "abcdefabcdefabcdef",
    "hub_token: hf_abcdef1234567": "hf_abcdef1234567",
}
CODE = [  # lines that hold no secret: shown as written
    'tokenizer = AutoTokenizer.from_pretrained("gpt2")',
    'tokenizer_name = "bert-base-uncased"',
    'TOKENIZER = "bert-base-uncased"',
    "max_tokens = 100000",
    "token_limit = 100000",
    'author = "Jane Doe Smith"',
    'token = os.environ["HF_TOKEN"]',
    'WANDB_API_KEY = os.environ.get("WANDB_API_KEY")',
    "tokenizer.pad_token = tokenizer.eos_token",
    "secret = get_secret(name)",
    "api_key = default_api_key",  # a variable of a Python file: no digit
    'tokenizer.pad_token = "<|endoftext|>"',  # a tokenizer's special tokens
    'tokenizer.eos_token = "</s>"',
    'special = {"pad_token": "<|pad|>", "mask_token": "[MASK]", "bos_token": "<s>", "unk_token": "<unk>"}',
    'auth_url = "https://example.com/oauth"',  # a URL without credentials
]
YAML_CODE = [
    'bos_token: "<|begin_of_text|>"',
    "pad_token: <|pad|>",
    "password: ${oc.env:DB_PASSWORD}",  # a reference, not the value
    "auth_url: https://example.com/oauth",
    "tokenizer: meta-llama/Llama-2-7b-hf",
    "max_tokens: 512",
    "author: janedoesmith",
]


def read_file(root: Path, name: str, lines: list[str]) -> str:
    """read_project's answer for ``name`` (``lines``) in a project whose script imports settings.py."""
    project = root / "project"
    project.mkdir(exist_ok=True)
    (project / "train.py").write_text("import settings\n")
    (project / name).write_text("\n".join(lines) + "\n")
    cfg = NASConfig.model_validate({"objective": {"command": "python train.py {params}", "metric": "m",
                                                  "params": {"x": 1}, "cwd": str(project)},
                                    "search": {"space": {"x": {"low": 0, "high": 2}}}})
    assert cfg.objective is not None
    files = project_files(cfg.objective)
    assert name in files
    return read_project(cfg.objective, files, name)


@pytest.fixture
def read(tmp_path: Path) -> str:
    return read_file(tmp_path, "settings.py", [*SECRETS, *CODE, "yaml_like: tok-0123456789abcdef"])


def test_every_secret_the_docs_name_is_redacted(read: str) -> None:
    for line, secret in SECRETS.items():
        assert secret not in read, line
    assert 'AUTH = "[redacted]"' in read and 'password = "[redacted]"' in read
    assert 'headers = {"Authorization": "[redacted]"}' in read and "api_key: str = '[redacted]'" in read


def test_ordinary_code_is_shown_as_written(read: str) -> None:
    for line in CODE:
        assert line in read, line
    assert "yaml_like: tok-0123456789abcdef" in read  # no secret's name


def test_a_config_files_unquoted_secret_is_redacted_without_a_digit(tmp_path: Path) -> None:
    read = read_file(tmp_path, "params.yaml", [*YAML_SECRETS, *YAML_CODE])
    for line, secret in YAML_SECRETS.items():
        assert secret not in read, line
    assert "password: [redacted]" in read
    for line in YAML_CODE:
        assert line in read, line
