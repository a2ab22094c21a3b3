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
]


@pytest.fixture
def read(tmp_path: Path) -> str:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("import settings\n")
    (project / "settings.py").write_text("\n".join([*SECRETS, *CODE, "yaml_like: tok-0123456789abcdef"]) + "\n")
    cfg = NASConfig.model_validate({"objective": {"command": "python train.py {params}", "metric": "m",
                                                  "params": {"x": 1}, "cwd": str(project)},
                                    "search": {"space": {"x": {"low": 0, "high": 2}}}})
    assert cfg.objective is not None
    files = project_files(cfg.objective)
    assert "settings.py" in files
    return read_project(cfg.objective, files, "settings.py")


def test_every_secret_the_docs_name_is_redacted(read: str) -> None:
    for line, secret in SECRETS.items():
        assert secret not in read, line
    assert 'AUTH = "[redacted]"' in read and 'password = "[redacted]"' in read
    assert 'headers = {"Authorization": "[redacted]"}' in read and "api_key: str = '[redacted]'" in read


def test_ordinary_code_is_shown_as_written(read: str) -> None:
    for line in CODE:
        assert line in read, line
    assert "yaml_like: tok-0123456789abcdef" in read  # no secret's name
