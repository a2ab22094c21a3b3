"""`agentlab models make-tiny --quantize q4_k_m` printed `q4_k_m: ...` out of line with ` q8_0:` and `   hf:`: the
roles are right-aligned on the longest one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main


@pytest.mark.parametrize("kind", ["q8_0", "q4_k_m"])
def test_make_tiny_lines_up_every_file_it_wrote(kind: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    from agentlab.core.train import tiny

    def build(out: Path, **options: Any) -> dict[str, Path]:  # the files' names, not a model: only the lines count
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"x" * 10)
        for name in ("model.gguf", f"model.{options['quantize']}.gguf"):
            (out / name).write_bytes(b"x" * 20)
        return {"hf": out, "gguf": out / "model.gguf", kind: out / f"model.{kind}.gguf"}

    monkeypatch.setattr(tiny, "make_tiny", build)
    assert main(["models", "make-tiny", "m", "--quantize", kind]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if ": m" in line]
    assert [line.split(": ")[0].strip() for line in lines] == ["hf", "gguf", kind]
    assert len({line.index(": ") for line in lines}) == 1, lines  # every colon in one column
