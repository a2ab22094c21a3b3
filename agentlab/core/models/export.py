"""A model as a plain transformers folder (``agentlab models export-hf``): loadable by
``AutoModelForCausalLM.from_pretrained`` with no agentlab installed."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from agentlab.core.errors import AgentlabError, InputError
from agentlab.core.files import check_replace, ordinary_modes, rename_into_place, unwritable
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
