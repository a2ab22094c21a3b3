"""Reading the files users give us: one place that turns every way a file can be unusable into one clear line.

Every file the toolkit reads on a user's behalf (YAML configs, CSV data, JSON / JSONL records, prompt files, run-folder
state) goes through :func:`read_text` or the readers built on it, so a missing file, a directory, a file we may not
read, binary data or text in another encoding all fail the same way: ``InputError`` (exit code 2) naming the file,
the line where it applies, what is wrong, and what to do next. Never a traceback.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, InputError

_BINARY_HINT = "is it the file you meant? (it looks like binary data, not text)"


def read_text(path: str | Path, what: str = "file", *, pipes: bool = False) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped).

    ``what`` names the file's role in messages (``"config file"``, ``"--input-file"``). Raises ``InputError`` for a
    missing path, a directory, a pipe, socket or device (a FIFO with no writer was waited on forever), a
    permission problem, bytes that are not UTF-8 (with the line and byte) or NUL bytes. ``pipes``: a pipe is read
    to its end (an input the user streams in: ``--input-file /dev/stdin``, ``<(cmd)``).
    """
    path = Path(path)
    article = "an" if what[:1].lower() in "aeiou" else "a"
    kind = _not_regular(path)
    # a FIFO was opened and waited on for a writer forever; a device is read without end
    if kind is not None and not (pipes and kind.startswith("a pipe")):
        raise InputError(f"{path}: is {kind}, not a regular file; expected {article} {what}",
                         hint="save the content to a file and pass that file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found", hint="check the path (relative paths start from the current "
                         f"directory, {Path.cwd()})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected {article} {what}", hint="pass the file inside it") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied reading the {what}", hint="check the file's permissions") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    return decode(data, path, what)


def _not_regular(path: Path) -> str | None:
    """What ``path`` is when it is there but is neither a regular file nor a directory (a named pipe, a socket, a
    device; links followed), None otherwise: a path that is missing or cannot be looked at is left to the read, whose
    error says why."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def decode(data: bytes, path: str | Path, what: str = "file") -> str:
    """``data`` as UTF-8 text, or ``InputError`` naming ``path``, the line and the offending byte."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start})", hint=_encoding_hint(data, path)) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InputError(f"{path}:{line}: the {what} contains NUL bytes, not text", hint=_BINARY_HINT)
    return text


def _encoding_hint(data: bytes, path: str | Path) -> str:
    """Text in UTF-16 / UTF-32 (their byte-order mark first: Windows tools save "Unicode" so), in a legacy 8-bit
    encoding (printable as Windows-1252, no control bytes) or binary data."""
    for mark, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                       (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):  # UTF-32 LE's starts as 16's
        if data.startswith(mark):
            return (f"it looks like {name} text (it starts with a {name} byte-order mark): save it as UTF-8, e.g. "
                    f"iconv -f {name} -t UTF-8 {path} > utf8-copy")
    sample = data[:65536]
    if b"\x00" not in sample and all(b >= 0x20 or b in b"\t\n\r" for b in sample):
        try:
            sample.decode("cp1252")
            return (f"it looks like text in another encoding (Latin-1 / Windows-1252?): save it as UTF-8, e.g. "
                    f"iconv -f cp1252 -t utf-8 {path} > utf8-copy")
        except UnicodeDecodeError:
            pass
    return f"save it as UTF-8; {_BINARY_HINT}"


def json_error(exc: json.JSONDecodeError) -> str:
    """``exc``'s message with its column, as a whole phrase (json's may end on ``starting at``)."""
    # json's message may leave its place to the exception's text (`Unterminated string starting at`)
    return f"{exc.msg} column {exc.colno}" if exc.msg.endswith(" at") else f"{exc.msg} (column {exc.colno})"


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """A JSON document; ``InputError`` with the line of a syntax error."""
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # json's message may leave its place to the exception's text (`Unterminated string starting at`)
        raise InputError(f"{path}:{exc.lineno}: invalid JSON: {json_error(exc)}",
                         hint=f"fix the JSON at that line of the {what}") from None


def iter_jsonl(path: str | Path, what: str = "JSONL file") -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for each non-blank line of a JSON Lines file; ``InputError`` names a bad line."""
    path = Path(path)
    for number, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: invalid JSON: {json_error(exc)}",
                             hint="each line must be one JSON object") from None


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks (an adapter's weights, a data file): what a run records of a
    file and what a resume compares it with."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def nearest_existing(path: str | Path, *, as_given: bool = False) -> Path:
    """The nearest of ``path`` (made absolute) and its parents that exists: where a write to a path whose folders
    are not made yet would create them, checked before anything is made. ``as_given``: spelled as ``path`` is (a
    relative path stays relative, ``.`` at the last), to name it in a message as the user wrote it."""
    where = Path(path) if as_given else Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    return where


def cannot_write(folder: Path) -> tuple[Path, str] | None:
    """Where and why a file cannot be made in ``folder`` (or in the folders a write would make there), None when it
    can: the nearest folder that exists is tried with a temporary file, removed at once (a path under ``/proc`` or a
    read-only disk passes a permission check as root). The why is the system's (``Read-only file system``,
    ``Permission denied``), but ``not a folder`` for a file in the way and ``no new file can be made there`` where
    the system said "No such file or directory" of a folder that is there (``/proc``, ``/sys``), which read as if
    that folder were missing."""
    where = nearest_existing(folder)
    try:
        if not where.is_dir():
            raise NotADirectoryError(0, "not a folder")
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        if exc.errno == errno.ENOENT and where.is_dir():
            return where, "no new file can be made there"
        return where, str(exc.strerror or exc)
    return None


def unwritable(folder: Path) -> str | None:
    """Why a model folder cannot be written in ``folder`` (None: it can), to refuse it before anything is resolved,
    converted or made: a file in the way (``afile.txt/sub``: "afile.txt is a file, not a folder"), ``/proc``, a
    read-only disk ("cannot write in /proc (no new file can be made there)"; tried, not asked: root passes
    ``os.access`` on /proc), the folder spelled as given. Without it a build failed at the end naming its hidden
    temporary folder (``/proc/.x.aj3vo0u9``), exit 1."""
    problem = cannot_write(folder)
    if problem is None:
        return None
    where, why = problem
    shown = nearest_existing(folder, as_given=True)
    if where.exists() and not where.is_dir():
        return f"{shown} is a file, not a folder"
    return f"cannot write in {shown} ({why})"


def rename_into_place(tmp: Path, out: Path) -> None:
    """The finished folder ``tmp`` renamed to ``out``. An existing folder ``out`` is moved aside first (into a hidden
    folder beside it, made with a unique name: never one of the user's) and deleted once ``tmp`` is in its place: the
    two renames run with Ctrl-C and SIGTERM held back (delivered right after), and a second rename that fails puts
    the old folder back, so ``out`` is never left without one of the two (an interrupt between them deleted the new
    model and left the old one only as ``.OUT.old``). Should putting it back fail as well, the error
    (``AgentlabError``, exit 1) names the hidden folder the old one is in."""
    if not out.exists():
        tmp.rename(out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old = aside / out.name
    try:
        with deferred_interrupts():
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException as exc:
                try:
                    old.rename(out)
                except OSError as back:
                    raise AgentlabError(
                        f"{out}: the new folder could not be renamed into place ({_why(exc)}), nor the old one put "
                        f"back ({_why(back)}); the old one is in {old}",
                        hint=f"move it back yourself: mv '{old}' '{out}'") from exc
                raise
    finally:
        if out.exists():  # the new folder, or the old one put back: nothing aside is needed any more
            shutil.rmtree(aside, ignore_errors=True)


def _why(exc: BaseException) -> str:
    return str(exc.strerror or exc) if isinstance(exc, OSError) else type(exc).__name__


@contextlib.contextmanager
def deferred_interrupts(on_first: Callable[[int], None] | None = None, *,
                        redeliver: bool = True) -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them (even when the block raised).

    A KeyboardInterrupt raised inside a database commit (Optuna's SQLite storage) leaves the session half-committed:
    the next write fails with ``StorageInternalError`` instead of recording the interruption, and the user sees an
    internal error where ``interrupted; continue with --resume`` belongs. Storage writes run inside this block, so the
    signal lands between writes. Off the main thread (where handlers cannot be set) it does nothing, nor for a signal
    the process ignores.

    ``on_first``: called, in the handler, with the first signal held, so the block can wind down on its own (training
    ends its step with a checkpoint: ``core.train.callbacks.StopOnSignal``); a second signal then goes at once to the
    handler there was before (the user insists). ``redeliver=False``: a signal held is not delivered when the block
    ends, the block having answered it (serve stops and writes its results). The block gets the list of the signals
    held: one the caller took in another way (uvicorn's handlers, while it serves) may be added, so that the next
    counts as the second.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous: dict[int, Any] = {}
    delivered = False  # a second signal went to the handler there was before: not delivered again at the end

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python

    def hold(signum: int, frame: object) -> None:
        nonlocal delivered
        if caught and on_first is not None:  # the second: delivered now, not again when the block ends
            delivered = True
            restore()
            signal.raise_signal(signum)  # the restored handler runs now: KeyboardInterrupt, or the default
            return
        caught.append(signum)
        if on_first is not None:
            on_first(signum)

    try:  # set inside the try: a signal between the two leaves no handler of this block bound after it
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler is not signal.SIG_IGN:
                previous[sig] = handler
                signal.signal(sig, hold)
        yield caught
    finally:
        restore()
        if caught and redeliver and not delivered:
            signal.raise_signal(caught[0])  # the restored handler runs now: KeyboardInterrupt, or the default


@contextlib.contextmanager
def said_at_once(say: Callable[[int], None]) -> Iterator[None]:
    """``say(signum)`` called at once, from a thread, on the first Ctrl-C or SIGTERM while the block runs, though
    the main thread is inside a long call into torch (a training step's backward pass): Python runs its signal
    handler, which raises the KeyboardInterrupt, only when torch hands back, and until then nothing was printed.
    The signal itself is left to its handler, as it was. Through ``signal.set_wakeup_fd``, which the C-level handler
    writes to at once; nothing is done off the main thread, or where another wakeup fd is set (an asyncio loop's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    watcher: threading.Thread | None = None
    previous: int | None = None

    def watch() -> None:
        said = False
        while data := os.read(read, 64):  # empty: the block ended (the write end closed)
            for signum in data:
                if not said and signum in (signal.SIGINT, signal.SIGTERM):
                    said = True
                    with contextlib.suppress(Exception):  # a console gone: the interrupt still comes
                        say(signum)

    try:  # from the pipe on: a Ctrl-C while this is set up leaves no fd open and no wakeup fd set
        os.set_blocking(write, False)
        with contextlib.suppress(ValueError):
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        if previous == -1:
            watcher = threading.Thread(target=watch, name="agentlab-said-at-once", daemon=True)
            watcher.start()
        elif previous is not None:  # another one's (an asyncio loop's): put back, nothing watched
            signal.set_wakeup_fd(previous)
        yield
    finally:
        if previous == -1:
            signal.set_wakeup_fd(-1)
        os.close(write)
        if watcher is not None and watcher.is_alive():
            watcher.join(timeout=5)
        if watcher is None or not watcher.is_alive():  # else left open: the watcher may still read it
            os.close(read)


def human_size(n: float | None) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``97.3 MiB``, ``2.1 GiB``; ``-`` for None."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def counted(n: int, noun: str) -> str:
    """``1 trial``, ``2 trials``, ``1,200 trials``: a count and its noun, plural unless the count is 1."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


CACHE_ENV = "AGENTLAB_CACHE"


def cache_dir() -> Path:
    """agentlab's cache folder: ``$AGENTLAB_CACHE``, else ``~/.cache/agentlab``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/agentlab").expanduser()


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``): changing it to
    read it, even for an instant, would give a file another thread creates then the wrong mode."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(path: str | Path, folder: bool = False, replacing: str | Path | None = None) -> None:
    """Give the temporary ``path`` the mode ``open()`` or ``mkdir`` would have given it, or the mode of the file it
    will replace (``replacing``, when that exists, keeps its own): ``tempfile.mkstemp`` / ``mkdtemp`` make theirs
    private (0600 / 0700), which a file renamed into place would keep (a GGUF, an adapter, a report that another
    user, or a worker running as another user, cannot read). Best effort: a filesystem without modes (vfat, some
    network mounts) refuses chmod, and the file is written all the same."""
    try:
        mode = os.stat(replacing).st_mode & 0o7777 if replacing is not None and os.path.exists(replacing) else \
            (0o777 if folder else 0o666) & ~umask()
        os.chmod(path, mode)
    except OSError:
        pass


def ordinary_modes(folder: str | Path) -> None:
    """:func:`ordinary_mode` for the temporary ``folder`` about to be renamed into place and for everything in it:
    safetensors' ``save_file`` (so every ``save_pretrained``) creates its file 0600, which the published model
    would keep beside its 0644 config and tokenizer. Links are left alone (chmod would change what they point at)."""
    ordinary_mode(folder, folder=True)
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                ordinary_mode(path, folder=name in dirs)


def check_replace(out: Path, force: bool, marker: str, what: str, flag: str = "--out",
                  when: str = "") -> None:
    """Refuse (``InputError``, exit 2, nothing written) to write ``what`` (a folder holding ``marker``) at ``out``:
    a folder that holds files needs ``force``, which is offered only where it would be accepted
    (:func:`replace_problem`); ``when``: when the replacing happens (" when training ends")."""
    if not out.exists():
        return
    problem = replace_problem(out, marker, what)
    if problem is not None:
        raise InputError(f"{flag} {out}: {problem}; nothing was written or deleted",
                         hint=f"--force replaces only {what}: choose another {flag}")
    if not force and any(out.iterdir()):
        raise InputError(f"{flag} {out}: already exists and is not empty; nothing was written",
                         hint=f"choose another {flag}, or pass --force to replace that {what.split()[-1]}{when}")


def replace_problem(out: Path, marker: str, what: str) -> str | None:
    """Why ``--force`` may not replace the folder ``out`` (None: it may): it is the current folder or one above it,
    a file, or a folder holding files but no ``marker`` (the file every ``what`` folder has): those would go with it."""
    here = Path.cwd().resolve()
    if here.is_relative_to(out.resolve()):
        return "is the current folder or holds it"
    if not out.is_dir():
        return f"is a file, not {what}"
    if any(out.iterdir()) and not (out / marker).is_file():
        return f"holds files but is not {what} (no {marker})"
    return None
