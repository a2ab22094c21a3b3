"""Reading a time-series CSV the user gives: every way the file can be wrong is one error naming the file, the line
where it applies, and what to do next; never a traceback.

The format is ETT's: a header line naming the columns, one of them ``date``; then one row per time step, dates
increasing, every other cell a finite number. The file is read whole through :func:`agentlab.core.files.read_text`
(missing, a directory, no permission, not UTF-8, NUL bytes: ``InputError``) and parsed with the ``csv`` module.

Empty, NaN and infinite cells are rejected with their line, not filled: one NaN turns the scaler's statistics and then
every loss into NaN, and how to fill a gap (interpolate, carry forward, drop the rows) is a decision about the data
that belongs to its owner. Missing rows (a gap in timestamps that otherwise have one step: an hourly file with a day
cut out) are one warning with the first gap and the count (``gap_line``): the windows take consecutive rows as
consecutive steps, so a window across a gap is wrong, but the rest of the file may still be worth searching on.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

from agentlab.core.errors import InputError
from agentlab.core.files import file_sha256, read_text
from agentlab.nas.data import (
    _DATE_FORMATS,
    _DAY_FIRST,
    DataError,
    SeriesData,
    _parse_date,
    check_features,
    normalize_freq,
    resolve_target,
)

WHAT = "data file"
_FORMAT = "a header line naming the columns, one of them 'date', then one row per time step (ETT format: " \
          "date,HUFL,HULL,...,OT)"
_YAML_KEY = re.compile(r"^\s*(---|[\w.-]+:(\s|$))")
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # values are stored as float32: anything larger becomes inf
_DAY = 86400
log = logging.getLogger(__name__)
_gaps_said: set[tuple[str, str]] = set()  # (file, sha256) whose gap was warned of: a search loads a file again
# once data.freq is resolved, and predict after the search


def load_csv(path: str | Path, features: str = "M", target: str = "OT", freq: str = "auto") -> SeriesData:
    """Read an ETT-format CSV: a ``date`` column plus numeric columns. Any file of that shape works.

    The target is moved to the last column; for "S" only the target is kept. In "M" mode a ``target`` that is not a
    column falls back to the last column (see :func:`~agentlab.nas.data.resolve_target`). Raises :class:`DataError`
    (exit code 2) naming the file, the line where it applies and what to do, for an unreadable or malformed file.
    """
    path = Path(path)
    check_features(features)
    freq = normalize_freq(freq)
    try:
        text = read_text(path, what=WHAT)
    except InputError as exc:  # one error type from this function: a DataError is also the ValueError callers catch
        raise DataError(exc.message, hint=exc.hint) from None
    if not text.strip():
        raise DataError(f"{path}: the {WHAT} is empty", hint=f"a CSV needs {_FORMAT}")
    if text.lstrip()[:1] in ("{", "["):
        line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        raise DataError(f"{path}:{line}: the {WHAT} looks like JSON, not CSV", hint=f"pass a CSV file: {_FORMAT}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header, line = _header(reader, path)
        date_col = header.index("date")
        names = [h for i, h in enumerate(header) if i != date_col]
        target = resolve_target(names, target, features, f"{path}:{line}")
        dates, rows, lines = _read_rows(reader, path, len(header), date_col, names)
    except csv.Error as exc:  # e.g. a field over the csv module's size limit: a one-line blob, not a table
        raise DataError(f"{path}:{reader.line_num}: not readable as CSV ({exc})",
                        hint=f"is it the file you meant? a CSV needs {_FORMAT}") from None
    if not rows:
        raise DataError(f"{path}: a header but no data rows", hint="add one row per time step below the header")
    stamps = np.array(dates, dtype="datetime64[s]")
    sha256 = _sha256(path)
    gap = gap_line(stamps, lines, path)
    if gap is not None and (str(path.resolve()), sha256) not in _gaps_said:
        _gaps_said.add((str(path.resolve()), sha256))
        log.warning("%s", gap)
    series = SeriesData(stamps, np.array(rows, dtype=np.float32), names, target, path.stem, freq, source=str(path),
                        sha256=sha256)
    return series.select(features)


def gap_line(stamps: np.ndarray, lines: list[int], path: Path | str) -> str | None:
    """The warning for rows missing from timestamps that have a frequency (at least half the steps between rows
    are the median step, and it is under four weeks: months vary in length), naming the first gap (the line of the
    row after it) and how many there are; None without gaps or frequency. A gap is a step of at least twice the
    median; a daily file without a Saturday or Sunday in it counts business days (a weekend is no gap). ``lines``:
    each row's line in the file. One vectorised pass over the timestamps, none over the file."""
    if len(stamps) < 3:
        return None
    seconds = np.asarray(stamps, dtype="datetime64[s]").astype(np.int64)
    steps = np.diff(seconds)
    step = int(np.median(steps))
    if step <= 0 or step >= 28 * _DAY or np.count_nonzero(steps == step) * 2 < len(steps):
        return None
    at = np.flatnonzero(steps >= 2 * step)
    if not len(at):
        return None
    missing = np.rint(steps[at] / step).astype(np.int64) - 1
    days = np.asarray(stamps, dtype="datetime64[D]")
    if step == _DAY and not np.any(np.isin((days.astype(np.int64) + 3) % 7, (5, 6))):  # Monday 0: no weekend day
        missing = np.busday_count(days[at] + 1, days[at + 1])  # the weekdays between the two rows
        at, missing = at[missing > 0], missing[missing > 0]
        if not len(at):
            return None
        unit = "business day"
    else:
        unit = _step_words(step)
    first, count = int(at[0]), int(missing[0])
    before, after = (str(np.datetime64(int(seconds[i]), "s")).replace("T", " ") for i in (first, first + 1))
    more = f" (the first of {len(at)} gaps, {int(missing.sum())} missing steps in all)" if len(at) > 1 else ""
    return (f"{path}:{lines[first + 1]}: {count} missing {unit} step{'' if count == 1 else 's'} between {before} "
            f"and this row's {after}{more}; the windows take consecutive rows as consecutive steps, so those across "
            "a gap are wrong: fill the missing rows (e.g. interpolate) or cut the file at the gap")


def _step_words(seconds: int) -> str:
    """A step as a unit: ``hourly``, ``15-minute``, ``daily``, ``2-hour``, ``30-second``."""
    for size, name, adverb in ((7 * _DAY, "week", "weekly"), (_DAY, "day", "daily"), (3600, "hour", "hourly"),
                               (60, "minute", None), (1, "second", None)):
        if seconds % size == 0:
            n = seconds // size
            return adverb if n == 1 and adverb else f"{n}-{name}"
    return f"{seconds}-second"  # unreachable: every step is a whole number of seconds


def _sha256(path: Path) -> str:
    """The file's sha256 (``SeriesData.sha256``: what a resume and a shared study's workers compare), "" when it
    cannot be read again."""
    try:
        return file_sha256(path)
    except OSError:
        return ""


def _header(reader: Iterator[list[str]], path: Path) -> tuple[list[str], int]:
    """The header's stripped column names and its line; blank lines before it are skipped."""
    header: list[str] = []
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            break
    line = reader.line_num  # type: ignore[attr-defined]
    shown = _shorten(", ".join(header))
    if "date" not in header:
        raise DataError(f"{path}:{line}: no 'date' column in the header ({shown})", hint=_no_date_hint(header))
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes or "" in header:
        problem = f"repeated {', '.join(repr(d) for d in dupes)}" if dupes else "an empty name"
        raise DataError(f"{path}:{line}: column names must be unique and non-empty ({problem})",
                        hint="rename the columns in the header line")
    if len(header) == 1:
        raise DataError(f"{path}:{line}: only a 'date' column, nothing to forecast",
                        hint="add at least one numeric column (comma-separated)")
    return header, line


_TIME_NAMES = ("time", "timestamp", "datetime", "date_time", "ds", "day", "period")  # what a 'date' column is
# often named elsewhere (pandas, Prophet's ds, neuralforecast)


def _no_date_hint(header: list[str]) -> str:
    """What most likely went wrong when the header has no ``date`` column."""
    first = header[0] if header else ""
    if len(header) == 1 and _YAML_KEY.match(first):
        return f"the file looks like YAML, not CSV; pass a CSV file: {_FORMAT}"
    if len(header) == 1 and (";" in first or "\t" in first):
        return "columns must be separated by commas (this header uses semicolons or tabs)"
    near = next((h for h in header if h.strip().lower() == "date"), None)
    if near is not None:
        return f"the date column must be named exactly 'date': rename '{near}'"
    near = next((h for h in header if h.strip().lower() in _TIME_NAMES), None)
    if near is not None:
        return f"the timestamps' column must be named 'date': rename '{near}' to 'date' in the header"
    return f"a CSV needs {_FORMAT}"


def _read_rows(reader: Iterator[list[str]], path: Path, width: int, date_col: int,
               names: list[str]) -> tuple[list[datetime], list[list[float]], list[int]]:
    """Dates, values and lines of the data rows; the first bad row raises with its line number. Blank lines are
    skipped."""
    texts: list[tuple[int, str]] = []
    rows: list[list[float]] = []
    bad: DataError | None = None  # a row's bad value: said after the dates of the rows before it are read
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num  # type: ignore[attr-defined]
        if len(row) != width:
            few = "too few" if len(row) < width else "too many"
            bad = DataError(f"{path}:{line}: {len(row)} cells, the header has {width} ({few})",
                            hint="every row needs one value per column; quote a value that contains a comma")
            texts.append((line, row[date_col] if date_col < len(row) else ""))
            break
        texts.append((line, row[date_col]))
        values = row[:date_col] + row[date_col + 1:]
        try:
            parsed = [float(cell) for cell in values]
        except ValueError:
            parsed = []
        if len(parsed) != len(values) or not all(abs(v) <= _FLOAT32_MAX for v in parsed):  # False for NaN too
            bad = _bad_value(path, line, values, names)
            break
        rows.append(parsed)
    dates = _read_dates(texts[:-1] if bad is not None else texts, path)
    if bad is not None:
        raise bad
    return dates, rows, [line for line, _ in texts]


def _read_dates(texts: list[tuple[int, str]], path: Path) -> list[datetime]:
    """The column's dates, in order: one format for the whole column where one fits (``NN/NN/YYYY``'s order said by
    ``_slash_order``), tried first on each row."""
    day_first = _slash_order(texts, path)
    dates: list[datetime] = []
    fmt: str | None = None
    for line, text in texts:
        try:
            dates.append(datetime.strptime(text.strip(), fmt) if fmt else _parse_date(text, day_first))
        except ValueError:
            try:
                dates.append(_parse_date(text, day_first))
            except ValueError:
                raise DataError(f"{path}:{line}: cannot parse date '{_shorten(text)}'",
                                hint="write dates as YYYY-MM-DD HH:MM:SS (ISO 8601)") from None
        if fmt is None:
            fmt = _format_of(text, day_first)
        if len(dates) > 1 and dates[-1] <= dates[-2]:
            raise DataError(f"{path}:{line}: date {dates[-1]} is not after the previous row's {dates[-2]}",
                            hint="sort the file by date and remove duplicate timestamps")
    return dates


def _format_of(text: str, day_first: bool) -> str | None:
    """The strptime format ``text`` is written in, of ``_DATE_FORMATS`` (None: ISO 8601, read by ``fromisoformat``,
    or none of them)."""
    for fmt in _DATE_FORMATS:
        fmt = _DAY_FIRST.get(fmt, fmt) if day_first else fmt
        try:
            datetime.strptime(text.strip(), fmt)
            return fmt
        except ValueError:
            continue
    return None


_SLASH = re.compile(r"\s*(\d{1,2})/(\d{1,2})/\d{4}\b")


def _slash_order(texts: list[tuple[int, str]], path: Path) -> bool:
    """Whether the column's ``NN/NN/YYYY`` dates are day first (``dd/mm/yyyy``), decided by the whole column: a
    first number above 12 (day first) or a second (month first); with neither, the reading whose steps are even
    (an hourly file read month first jumps a month at each midnight); readings that give the same dates (every
    date's day is its month: a yearly series) are month first. A European file whose days were all 12 or less was
    read month first: its forecast was dated months away, exit 0."""
    pairs = [(line, int(m.group(1)), int(m.group(2))) for line, text in texts if (m := _SLASH.match(text))]
    if not pairs or all(a == b for _, a, b in pairs):
        return False
    first, second = (next((p for p in pairs if p[i] > 12), None) for i in (1, 2))
    if first is not None and second is not None:
        raise DataError(f"{path}:{max(first[0], second[0])}: dates both day first (line {first[0]}) and month first "
                        f"(line {second[0]})", hint="write dates as YYYY-MM-DD HH:MM:SS (ISO 8601)")
    if first is not None or second is not None:
        return first is not None
    spread = {}
    for day_first in (False, True):
        try:
            stamps = np.array([_parse_date(text, day_first).timestamp() for _, text in texts])
        except ValueError:
            spread[day_first] = math.inf  # another row is no date at all: said with its line later
            continue
        steps = np.diff(stamps)
        spread[day_first] = (steps.max() / steps.min() if len(steps) and steps.min() > 0 else math.inf)
    if spread[True] * 2 < spread[False] or spread[False] * 2 < spread[True]:
        return spread[True] < spread[False]
    if len(texts) < 2 or min(spread.values()) == math.inf:
        return False  # one row, or rows out of order: said with its line later
    raise DataError(f"{path}: the dates ({texts[0][1].strip()!r} ...) read as well day first as month first",
                    hint="write dates as YYYY-MM-DD HH:MM:SS (ISO 8601)")


def _bad_value(path: Path, line: int, values: list[str], names: list[str]) -> DataError:
    """The error for the first cell of a row that is not a finite number."""
    hint = "fill or drop the rows with missing values: empty, NaN and infinite cells are not accepted"
    for name, cell in zip(names, values, strict=True):
        if not cell.strip():
            return DataError(f"{path}:{line}: column '{name}' is empty", hint=hint)
        try:
            value = float(cell)
        except ValueError:
            return DataError(f"{path}:{line}: column '{name}': '{_shorten(cell)}' is not a number",
                             hint=f"every column but 'date' must hold numbers: fix the cell, or drop column "
                                  f"'{name}' if it holds text (or encode it as numbers)")
        if not math.isfinite(value):
            return DataError(f"{path}:{line}: column '{name}': NaN or infinite value '{cell.strip()}'", hint=hint)
        if abs(value) > _FLOAT32_MAX:
            return DataError(f"{path}:{line}: column '{name}': {cell.strip()} is too large (float32 holds up to "
                             f"{_FLOAT32_MAX:.3g})", hint="rescale the column, e.g. to other units")
    return DataError(f"{path}:{line}: a value is not a finite number", hint=hint)  # unreachable: callers checked


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for a one-line message (a binary-ish header can be a megabyte)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."

