"""A model as a plain transformers folder (``agentlab models export-hf``): loadable by
``AutoModelForCausalLM.from_pretrained`` with no agentlab installed."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from agentlab.core.errors import AgentlabError, InputError
from agentlab.core.files import cannot_write, check_replace, ordinary_modes
from agentlab.core.models.builtin import BUILTIN_MODELS, builtin_for_upstream
from agentlab.core.models.convert import MARKER
from agentlab.core.models.load import hf_model_folder
from agentlab.core.models.modelfiles import check_hf_folder, read_gguf_header
from agentlab.core.models.modelref import resolve_model

log = logging.getLogger(__name__)


def export_hf(ref: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write model ``ref`` (a built-in name, a GGUF file, a transformers folder, a cached hub id) as a plain
    transformers folder ``out`` that ``AutoModelForCausalLM.from_pretrained(out)`` loads with no agentlab installed:
    the one a GGUF de-quantizes into (cached, as for every local load), copied under a temporary name and renamed
    into place. A built-in model's folder also gets a README.md naming its upstream hub id, which adapters trained
    on it record as their base. ``force``: replace an existing ``out``. Returns ``out``.

    Refused before anything is written or deleted (``InputError``, exit 2): an ``out`` that is a file or where nothing
    can be written (:func:`unwritable`; checked before the model is resolved or converted), an ``out`` that is the
    model's own folder or holds its file (``--force`` would replace the folder, and the model with it: the source of
    a GGUF export is often ``DIR/model.gguf`` beside the transformers files ``DIR`` already holds), and a ``.gguf``
    file that is no GGUF or whose header or tensor data is cut short (the check ``agentlab models list`` and
    ``check`` make), which transformers would otherwise fail on with a message about architecture support, and a
    transformers folder whose config.json is not valid JSON or names no model, or that lacks its weights or tokenizer
    (``check_hf_folder``, as ``train-persona --base-model`` checks it)."""
    out = Path(out)
    if out.exists() and not out.is_dir():  # before the model is resolved, as where nothing can be written
        raise InputError(f"--out {out}: is a file, not a transformers model folder; nothing was written",
                         hint="choose another --out: a new folder")
    if (problem := unwritable(out.parent)) is not None:
        raise InputError(f"--out {out}: {problem}; nothing was written", hint="give --out a folder you can write to")
    given = Path(ref).expanduser()
    if given.suffix == ".gguf" and given.is_file():  # refused with the reason `models list` and `check` give, not as
        try:  # "not found; tried a GGUF file (... is a file but not GGUF)"
            read_gguf_header(given)
        except AgentlabError as exc:
            raise InputError(exc.message, hint=exc.hint) from None
    source = resolve_model(str(ref), user="the transformers export")
    if source.path.resolve().is_relative_to(out.resolve()):
        raise InputError(f"--out {out}: is or holds the model being exported ({source.path}); nothing was written "
                         "or deleted", hint="choose another --out: a new folder, e.g. beside the model's")
    try:  # a damaged model the user gave: bad input, not a transformers limitation
        if source.format == "gguf":
            read_gguf_header(source.path)
        else:  # copied as it is: a broken folder was copied and reported as exported
            check_hf_folder(source.path)
    except AgentlabError as exc:
        raise InputError(exc.message, hint=exc.hint) from None
    check_replace(out, force, "config.json", "a transformers model folder")
    folder = hf_model_folder(ref, user="the transformers export")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.name != MARKER and not file.name.endswith(".lock"):
                shutil.copyfile(file, tmp / file.name)
        name = builtin_for_upstream(str(ref)) or str(ref)
        if name in BUILTIN_MODELS:
            model = BUILTIN_MODELS[name]
            (tmp / "README.md").write_text(
                f"# {name}: {model.description}\n\nWritten by `agentlab models export-hf {name}`: the built-in GGUF "
                f"de-quantized to float weights. Upstream model: `{model.upstream}` ({model.license}).\n\nAdapters "
                f"trained on it by agentlab name `{model.upstream}` as their base; load one on this folder with\n\n"
                "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
                "model = PeftModel.from_pretrained(\n"
                f"    AutoModelForCausalLM.from_pretrained(\"{out.resolve()}\"), ADAPTER)\n```\n",
                encoding="utf-8")
        ordinary_modes(tmp)  # mkdtemp makes it private; the exported folder is an ordinary one
        rename_into_place(tmp, out)  # an existing out is a folder: check_replace refused a file
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to the transformers folder %s", ref, out)
    return out


def unwritable(folder: Path) -> str | None:
    """Why a model folder cannot be written in ``folder`` (None: it can), to refuse it before anything is resolved,
    converted or made: a file in the way (``afile.txt/sub``: "afile.txt is a file, not a folder"), ``/proc``, a
    read-only disk ("cannot write in /proc (...)"; tried, not asked: root passes ``os.access`` on /proc). Without it a
    build failed at the end naming its hidden temporary folder (``/proc/.x.aj3vo0u9``), exit 1."""
    problem = cannot_write(folder)
    if problem is None:
        return None
    where, why = problem
    shown = next((p for p in (folder, *folder.parents) if p.exists()), where)  # spelled as given
    if where.exists() and not where.is_dir():
        return f"{shown} is a file, not a folder"
    return f"cannot write in {shown} ({why})"


def rename_into_place(tmp: Path, out: Path) -> None:
    """The finished folder ``tmp`` renamed to ``out``. An existing folder ``out`` is moved aside first (into a hidden
    folder beside it) and deleted once ``tmp`` is in its place: the two renames run with Ctrl-C and SIGTERM held back
    (delivered right after), and a second rename that fails puts the old folder back, so ``out`` is never left
    without a model (an interrupt between them deleted the new model and left the old one only as ``.OUT.old``)."""
    if not out.exists():
        tmp.rename(out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old = aside / out.name
    try:
        with _signals_held():
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)
                raise
    finally:
        if out.exists():  # the new folder, or the old one put back: nothing aside is needed any more
            shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A Ctrl-C or SIGTERM that comes in the block is held back and sent again as it ends, to the handler there was
    (a KeyboardInterrupt then, under agentlab's CLI). Handlers are Python's, run in the main thread whichever thread
    the system gave the signal to (blocking it there, ``pthread_sigmask``, missed those taken by torch's threads);
    elsewhere, or for a handler not set from Python, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        caught.append(signum)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    held = {s: h for s, h in before.items() if h is not None}
    for s in held:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, h in held.items():
            signal.signal(s, h)
        if caught:
            signal.raise_signal(caught[0])
