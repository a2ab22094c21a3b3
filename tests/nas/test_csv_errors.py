"""Every malformed data file given to `agentlab nas` is one `error:` line naming the file (and the line), a hint,
exit code 2, and never a traceback. Runs the real CLI on `--dry-run`, which loads and windows the data and stops."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agentlab.cli import main

HEADER = "date,a,b,OT"


def rows(n: int, start: int = 0) -> list[str]:
    """``n`` valid hourly rows of HEADER, from hour ``start``."""
    return [f"2021-03-{1 + (start + i) // 24:02d} {(start + i) % 24:02d}:00,{i % 7},{i * 0.5},{(i % 24) / 3:.4f}"
            for i in range(n)]


def lines(*parts: str | list[str]) -> str:
    out: list[str] = []
    for part in parts:
        out.extend([part] if isinstance(part, str) else part)
    return "\n".join(out) + "\n"


GOOD = lines(HEADER, rows(300))  # long enough for the default windows (48 + 24) in every 70/10/20 split

# (id, file name, content: text, bytes or None for no file, the line the error names (None: the file only), CLI args)
CASES: list[tuple[str, str, str | bytes | None, int | None, list[str]]] = [
    ("empty", "d.csv", "", None, []),
    ("blank-lines-only", "d.csv", "\n  \n\n", None, []),
    ("header-only", "d.csv", HEADER + "\n", None, []),
    ("no-date-column", "d.csv", lines("time,a,b,OT", rows(300)), 1, []),
    ("date-capitalised", "d.csv", lines("Date,a,b,OT", rows(300)), 1, []),
    ("semicolons", "d.csv", lines(HEADER.replace(",", ";"), [r.replace(",", ";") for r in rows(300)]), 1, []),
    ("unparseable-date", "d.csv", lines(HEADER, rows(10), "tomorrow,1,2,3", rows(300, 20)), 12, []),
    ("non-numeric-cell", "d.csv", lines(HEADER, rows(5), "2021-03-01 05:00,1,x,3", rows(300, 6)), 7, []),
    ("empty-cell", "d.csv", lines(HEADER, rows(5), "2021-03-01 05:00,1,,3", rows(300, 6)), 7, []),
    ("too-few-cells", "d.csv", lines(HEADER, rows(3), "2021-03-01 03:00,1,2", rows(300, 4)), 5, []),
    ("too-many-cells", "d.csv", lines(HEADER, rows(3), "2021-03-01 03:00,1,2,3,4", rows(300, 4)), 5, []),
    ("duplicate-columns", "d.csv", lines("date,a,a,OT", rows(300)), 1, []),
    ("duplicate-date-column", "d.csv", lines("date,a,date,OT", rows(300)), 1, []),
    ("empty-column-name", "d.csv", lines("date,a,,OT", rows(300)), 1, []),
    ("nan", "d.csv", lines(HEADER, rows(8), "2021-03-01 08:00,1,nan,3", rows(300, 9)), 10, []),
    ("inf", "d.csv", lines(HEADER, rows(8), "2021-03-01 08:00,1,2,-inf", rows(300, 9)), 10, []),
    ("beyond-float32", "d.csv", lines(HEADER, rows(8), "2021-03-01 08:00,1,2,1e39", rows(300, 9)), 10, []),
    ("json-after-blank-lines", "d.csv", '\n\n{"OT": [1.0]}\n', 3, []),
    ("date-goes-back", "d.csv", lines(HEADER, rows(4), rows(300, 2)), 6, []),
    ("too-few-rows", "d.csv", lines(HEADER, rows(50)), None, []),
    ("too-few-rows-for-val", "d.csv", lines(HEADER, rows(200)), None, []),  # train fits, val does not
    ("ett-split-too-short", "ETTh1.csv", GOOD, None, []),  # auto picks the 12/4/4-month split by the name
    ("only-date-column", "d.csv", lines("date", [r.split(",")[0] for r in rows(300)]), 1, []),
    ("one-column-no-date", "d.csv", lines("value", [str(i) for i in range(300)]), 1, []),
    ("yaml", "d.csv", "data:\n  path: x.csv\nmodel:\n  d_model: 32\n", 1, []),
    ("json-object", "d.json", '{"date": ["2021-03-01"], "OT": [1.0]}\n', 1, []),
    ("json-lines", "d.csv", '[1, 2, 3]\n[4, 5, 6]\n', 1, []),
    ("one-huge-line", "d.csv", '"' + "x" * 200_000 + '"\n', 1, []),  # over the csv module's field limit
    ("not-utf8", "d.csv", lines(HEADER, rows(3)).encode() + "2021-03-01 03:00,1,2,\u00e9\n".encode("latin-1"), 5,
     []),
    ("binary", "d.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, []),
    ("missing", "absent.csv", None, None, []),
    ("target-missing-ms", "d.csv", lines("date,a,b,c", rows(300)), 1, ["--set", "data.features=MS"]),
    ("target-missing-s", "d.csv", lines("date,a,b,c", rows(300)), 1, ["--set", "data.features=S"]),
]


def _run(in_tmp: Path, capsys: pytest.CaptureFixture, name: str, content: str | bytes | None,
         args: list[str], via: Callable[[Path], list[str]]) -> tuple[int, str, Path]:
    path = in_tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    code = main(["nas", *via(path), *args, "--dry-run"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err, path


def _assert_one_clear_error(code: int, output: str, path: Path, line: int | None) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    errors = [text for text in output.splitlines() if text.startswith("error:")]
    assert len(errors) == 1, output
    where = f"{path}:{line}:" if line is not None else f"{path}"
    assert where in errors[0], output
    assert any(text.startswith("hint:") for text in output.splitlines()), output  # the next step


@pytest.mark.parametrize("name,content,line,args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_data_file_is_one_error_line_exit_2(in_tmp: Path, capsys: pytest.CaptureFixture, name: str,
                                                      content: str | bytes | None, line: int | None,
                                                      args: list[str]) -> None:
    code, output, path = _run(in_tmp, capsys, name, content, args, lambda p: ["--data", str(p)])
    _assert_one_clear_error(code, output, path, line)


def test_a_directory_as_data_file(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    # --data refuses a directory itself (typer's dir_okay=False); a config or --set reaches the reader.
    (in_tmp / "folder").mkdir()
    code, output, path = _run(in_tmp, capsys, "folder", None, [], lambda p: ["--set", f"data.path={p}"])
    _assert_one_clear_error(code, output, path, None)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_data_file(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    path = in_tmp / "locked.csv"
    path.write_text(GOOD)
    path.chmod(0)
    code, output, _ = _run(in_tmp, capsys, "locked.csv", None, [], lambda p: ["--data", str(p)])
    _assert_one_clear_error(code, output, path, None)


def test_good_file_and_m_mode_without_the_target_column(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code, output, _ = _run(in_tmp, capsys, "d.csv", GOOD, [], lambda p: ["--data", str(p)])
    assert code == 0 and "config ok" in output, output
    # Defect 4: no `OT` column, features M (the default): nothing needs a target, so the file is fine.
    code, output, _ = _run(in_tmp, capsys, "no_ot.csv", lines("date,a,b,c", rows(300)), [],
                           lambda p: ["--data", str(p)])
    assert code == 0 and "config ok" in output, output


def test_a_large_file_loads(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    # 60,000 rows (~2.5 MB, ETTm-sized) read whole and parsed in one pass; nothing here may scale worse than linearly.
    import numpy as np

    dates = np.datetime64("2015-01-01T00:00") + np.arange(60_000) * np.timedelta64(15, "m")
    body = [f"{str(d).replace('T', ' ')},{i % 7},{i * 0.5},{i % 96}" for i, d in enumerate(dates)]
    code, output, _ = _run(in_tmp, capsys, "big.csv", lines(HEADER, body), ["--set", "data.freq=t"],
                           lambda p: ["--data", str(p)])
    assert code == 0 and "config ok" in output, output
