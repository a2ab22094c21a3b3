"""PEFT adapter folders as every command meets them: one check, one set of messages (export, blend, debate)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, InputError
from agentlab.core.files import read_json
from agentlab.core.models.builtin import canonical_base
from agentlab.core.models.modelfiles import model_shape, safetensors_header
from agentlab.core.models.modelref import ModelRef, resolve_model

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_WRITTEN_BY = "give a folder saved by `agentlab train-persona` or PEFT's save_pretrained"
# The shipped personas' adapters, where `agentlab train-persona`'s README commands put them: the default agents of
# `debate` and seeds of `evolve`.
PERSONAS = ("persona_a", "persona_b", "persona_c")
# The skill adapters (`agentlab train-persona --data skill_X --out adapters/skill_X`): the default seeds of `evolve`.
SKILLS = ("skill_arithmetic", "skill_geography", "skill_units")


def persona_adapters(cwd: Path | None = None) -> list[Path]:
    """adapters/persona_a, _b, _c under ``cwd`` (default: the current directory), those that exist."""
    base = (cwd or Path.cwd()) / "adapters"
    return [base / name for name in PERSONAS if (base / name).is_dir()]


def skill_adapters(cwd: Path | None = None) -> list[Path]:
    """adapters/skill_arithmetic, _geography, _units under ``cwd`` (default: the current directory), those that
    exist."""
    base = (cwd or Path.cwd()) / "adapters"
    return [base / name for name in SKILLS if (base / name).is_dir()]


def read_adapter(adapter: str | Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json`` as a dict; ``InputError`` (exit 2) when ``adapter`` is no PEFT adapter
    folder: missing, a file, no config, no weights, or a config without ``peft_type``."""
    adapter = Path(adapter)
    if not adapter.is_dir():
        what = "is a file" if adapter.exists() else "not found"
        raise InputError(f"{adapter}: adapter folder {what}",
                         hint="give the folder that holds adapter_config.json and adapter_model.safetensors")
    if (adapter / ADAPTER_CONFIG).is_dir():  # it said "no adapter_config.json"
        raise InputError(f"{adapter / ADAPTER_CONFIG}: is a folder, not the adapter's config file",
                         hint=f"{ADAPTER_CONFIG} must be the JSON file PEFT writes: {_WRITTEN_BY}")
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise InputError(f"{adapter}: not a PEFT adapter folder (no {ADAPTER_CONFIG})", hint=_WRITTEN_BY)
    folder = next((adapter / name for name in ADAPTER_WEIGHTS if (adapter / name).is_dir()), None)
    if folder is not None:  # PEFT would open it as the weights file
        raise InputError(f"{folder}: is a folder, not the adapter's weights file",
                         hint="the adapter's weights must be one file; save, copy or train the adapter again")
    if not any((adapter / name).is_file() for name in ADAPTER_WEIGHTS):
        raise InputError(f"{adapter}: not a PEFT adapter folder (no {' or '.join(ADAPTER_WEIGHTS)})",
                         hint="the adapter's weights are missing; save or train it again")
    config = read_json(adapter / ADAPTER_CONFIG, "adapter config")
    if not isinstance(config, dict) or "peft_type" not in config:
        raise InputError(f"{adapter / ADAPTER_CONFIG}: not a PEFT adapter config (no peft_type)", hint=_WRITTEN_BY)
    return config


def check_weights(adapter: str | Path) -> None:
    """An adapter folder's ``adapter_model.safetensors``, when it has one, has a header and tensors that end within
    the file (:func:`~agentlab.core.models.modelfiles.safetensors_header`; no tensor read): ``InputError`` (exit 2)
    naming the file otherwise. A copy or save cut short failed only once the model had loaded."""
    file = Path(adapter) / ADAPTER_WEIGHTS[0]
    if not file.is_file():
        return
    try:
        safetensors_header(file)
    except AgentlabError as exc:
        raise InputError(exc.message, hint="the weights file is damaged or cut short (an interrupted copy, download "
                         "or save): save, copy or train the adapter again") from None


def check_scales(folder: str | Path, config: Mapping[str, Any]) -> None:
    """The values of ``adapter_config.json`` that scale a LoRA adapter's weights (``r``, ``lora_alpha``,
    ``use_rslora``) have the types PEFT writes (``InputError``, exit 2, naming the file and the field):
    ``"lora_alpha": "abc"`` failed as an internal ValueError, and ``"r": "eight"``, ``"lora_alpha": null`` or
    ``"use_rslora": "yes"`` were taken silently. A field left out keeps PEFT's default."""
    wrong = None
    if "r" in config and not (type(config["r"]) is int and config["r"] > 0):
        wrong = ("r", config["r"], "a whole number above 0")
    elif "lora_alpha" in config and not (type(config["lora_alpha"]) in (int, float)
                                         and math.isfinite(config["lora_alpha"]) and config["lora_alpha"] > 0):
        wrong = ("lora_alpha", config["lora_alpha"], "a number above 0")
    elif "use_rslora" in config and type(config["use_rslora"]) is not bool:
        wrong = ("use_rslora", config["use_rslora"], "true or false")
    if wrong is not None:
        field, value, want = wrong
        raise InputError(f"{Path(folder) / ADAPTER_CONFIG}: {field} is {json.dumps(value)}; it must be {want}",
                         hint=f"fix {field} in that file (as PEFT wrote it), or train the adapter again")


def read_lora(folder: str | Path, what: str) -> dict[str, Any]:
    """A LoRA adapter folder's ``adapter_config.json`` (:func:`read_adapter`), refused (``InputError``, exit 2,
    naming the file and the field) before anything loads when its ``peft_type`` is another (``what``: what only LoRA
    adapters can be, "merged and exported to GGUF"), its ``r``, ``lora_alpha`` or ``use_rslora`` is not of the type
    PEFT writes (:func:`check_scales`; ``"r": "sixteen"`` was an exit 1 with torch's words, after the model loaded),
    or its weights are cut short (:func:`check_weights`)."""
    config = read_adapter(folder)
    peft_type = config.get("peft_type")
    if peft_type != "LORA":  # PEFT fails deep in torch on a prefix-tuning folder ("empty(): argument"), and
        # reads "lora" as no type at all (KeyError 'lora'): a child blended from it would load nowhere
        lora = isinstance(peft_type, str) and peft_type.upper() == "LORA"
        raise InputError(f"{Path(folder) / ADAPTER_CONFIG}: peft_type is {peft_type!r}; "
                         + ("PEFT reads only \"LORA\"" if lora else f"only LoRA adapters can be {what}"),
                         hint='write "peft_type": "LORA" there, as PEFT does' if lora else
                         "give a LoRA adapter (what `agentlab train-persona` trains)")
    check_scales(folder, config)
    check_weights(folder)
    return config


def check_lora_rank(folder: str | Path, config: Mapping[str, Any]) -> None:
    """A LoRA adapter whose ``adapter_config.json`` disagrees with its weights (from the safetensors header: no
    tensor read) is refused (``InputError``, exit 2, naming the file and the field): an ``r`` (or ``rank_pattern``)
    other than the rank of the weights (``lora_A``'s rows; PEFT builds the layers from ``r`` and fails on every
    tensor's size, "does not fit this model", and a blend would take the weights' rank and the config's alpha), or
    ``target_modules`` that leave out modules the weights hold (:func:`_check_targets`). What every reader of a LoRA
    folder calls: the blend and ``evolve run``'s seeds (``read_parent``), ``train-persona export``, and every load
    (eval, debate, the hf backend). Folders that are not LoRA, hold no safetensors file or whose values are mistyped
    (refused elsewhere, naming the field) are left alone."""
    if config.get("peft_type") != "LORA":
        return
    file = Path(folder) / ADAPTER_WEIGHTS[0]
    if not file.is_file():
        return
    try:
        header = safetensors_header(file)
    except AgentlabError:
        return  # damaged: check_weights and PEFT name it
    _check_rank(folder, config, header)
    _check_targets(folder, config, header)


def _check_rank(folder: str | Path, config: Mapping[str, Any], header: Mapping[str, Any]) -> None:
    """:func:`check_lora_rank`'s ``r`` / ``rank_pattern`` against the rank of the weights (``header``)."""
    rank, patterns = config.get("r"), config.get("rank_pattern") or {}
    if type(rank) is not int or not isinstance(patterns, dict):
        return
    file = Path(folder) / ADAPTER_WEIGHTS[0]
    for key, meta in sorted(header.items()):
        found = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_A(?:\.[^.]+)?\.weight", key)
        shape = meta.get("shape") if isinstance(meta, dict) else None
        if found is None or not isinstance(shape, list) or len(shape) != 2:
            continue
        module, want, field = found.group(1), rank, "r"
        for pattern, value in patterns.items():  # as PEFT matches them: the pattern ends the module's name
            try:
                if re.match(rf"(.*\.)?({pattern})$", module):
                    want, field = value, f"rank_pattern[{json.dumps(pattern)}]"
                    break
            except re.error:
                return
        if type(want) is int and shape[0] != want:
            raise InputError(f"{Path(folder) / ADAPTER_CONFIG}: {field} is {want}, but the adapter's weights have "
                             f"rank {shape[0]} ({module}.lora_A is {shape[0]}x{shape[1]} in {file.name})",
                             hint=f"set {field} to {shape[0]} in that file (as PEFT wrote it), or train the adapter "
                             "again")


_FACTOR = re.compile(r"(?:base_model\.model\.)?(.+)\.lora_(?:A|B|embedding_A|embedding_B)(?:\.[^.]+)?(?:\.weight)?")


def _targeted(config: Mapping[str, Any], module: str) -> bool | None:
    """Whether PEFT puts a LoRA layer on ``module`` (its path in the base model, as the weights file names it) by
    the config's ``target_modules`` and ``exclude_modules``, as PEFT's ``check_target_module_exists`` matches them: a
    string is a regular expression the whole path matches, a list names modules by their whole path or its end
    (``q_proj`` matches ``model.layers.0.self_attn.q_proj``). None when that cannot be told from the config alone:
    no list or pattern (PEFT fills in the model type's default), ``"all-linear"`` (every linear layer but the
    output), ``layers_to_transform`` or ``target_parameters`` given, or values PEFT would not take."""
    targets, exclude = config.get("target_modules"), config.get("exclude_modules")
    if (config.get("layers_to_transform") not in (None, []) or config.get("target_parameters")
            or targets is None or (isinstance(targets, str) and targets.lower() == "all-linear")):
        return None

    def matches(names: Any) -> bool | None:
        if isinstance(names, str):
            try:
                return re.fullmatch(names, module) is not None
            except re.error:
                return None
        if isinstance(names, list) and all(isinstance(name, str) for name in names):
            return any(module == name or module.endswith(f".{name}") for name in names)
        return None

    excluded = matches(exclude) if exclude else False
    found = matches(targets)
    return None if excluded is None or found is None else found and not excluded


def _check_targets(folder: str | Path, config: Mapping[str, Any], header: Mapping[str, Any]) -> None:
    """:func:`check_lora_rank`'s ``target_modules`` against the modules the weights (``header``) hold LoRA factors
    for: PEFT makes LoRA layers only for the modules ``target_modules`` names (:func:`_targeted`) and drops the rest of
    the file's weights without a word, so an adapter whose config says ``["q_proj"]`` over weights for 14 modules
    loaded, was exported and blended as one of q_proj alone. Modules named but not in the weights are left to PEFT
    (their LoRA starts as no change; a load names them as weights the file lacks)."""
    modules = sorted({found.group(1) for key in header if (found := _FACTOR.fullmatch(key)) is not None})
    untargeted = [module for module in modules if _targeted(config, module) is False]
    if not untargeted:
        return
    if all(_targeted({**config, "exclude_modules": None}, module) for module in untargeted):  # named, then excluded
        field, hint = "exclude_modules", "remove those modules from exclude_modules in that file"
    else:
        names = sorted({module.rsplit(".", 1)[-1] for module in modules})
        field, hint = "target_modules", f"set target_modules to {json.dumps(names)} in that file (the modules its " \
            "weights hold)"
    raise InputError(f"{Path(folder) / ADAPTER_CONFIG}: {field} is {json.dumps(config.get(field))}, which leaves out "
                     f"{len(untargeted)} of the {len(modules)} modules the adapter's weights hold (e.g. "
                     f"{untargeted[0]} in {ADAPTER_WEIGHTS[0]}): PEFT would not load them",
                     hint=f"{hint}, or train the adapter again")


def _peft_types() -> frozenset[str]:
    """The ``peft_type`` values the installed PEFT loads (imported here only: PEFT imports torch)."""
    from peft.utils import PeftType

    return frozenset(kind.value for kind in PeftType)


def read_peft(folder: str | Path) -> dict[str, Any]:
    """An adapter folder PEFT's ``PeftModel`` loads, of any PEFT method (LoRA, IA3, prefix tuning, ...): what
    `agentlab eval` scores. Its ``adapter_config.json`` (:func:`read_adapter`), refused (``InputError``, exit 2,
    naming the file) before anything loads when its ``peft_type`` is not one the installed PEFT knows (``"lora"``:
    PEFT reads only ``"LORA"``), a LoRA's ``r``, ``lora_alpha`` or ``use_rslora`` is mistyped (:func:`check_scales`,
    LoRA only) or its weights are cut short (:func:`check_weights`). Blending and export stay LoRA-only
    (:func:`read_lora`)."""
    config = read_adapter(folder)
    peft_type = config.get("peft_type")
    if peft_type == "LORA":
        check_scales(folder, config)
    else:
        known = _peft_types()
        if peft_type not in known:
            upper = peft_type.upper() if isinstance(peft_type, str) else None
            raise InputError(f"{Path(folder) / ADAPTER_CONFIG}: peft_type is {peft_type!r}; "
                             + (f"PEFT reads only \"{upper}\"" if upper in known else
                                "the installed PEFT knows no such method (it knows LORA, IA3, PREFIX_TUNING, ...)"),
                             hint=f'write "peft_type": "{upper}" there, as PEFT does' if upper in known else
                             f"{_WRITTEN_BY}, with a PEFT method this PEFT has (or update PEFT)")
    check_weights(folder)
    return config


def read_scored(folders: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Each adapter folder's config (:func:`read_peft`), checked to share one ``peft_type``: PEFT puts adapters of
    one method only on one model ("Cannot combine adapters with different peft types" was an exit 1 once the model
    had loaded). ``InputError`` (exit 2) naming the first folder of another type."""
    configs: list[dict[str, Any]] = []
    first: Path | None = None
    for folder in folders:
        config = read_peft(folder)
        if first is not None and config["peft_type"] != configs[0]["peft_type"]:
            raise InputError(f"{Path(folder) / ADAPTER_CONFIG}: peft_type is {config['peft_type']!r}, but "
                             f"{first}'s is {configs[0]['peft_type']!r}: PEFT puts adapters of one method only on "
                             "one model", hint="score each PEFT method's adapters in a run of their own (one "
                             "`agentlab eval` per peft_type, with the same --tasks and --limit)")
        first = first or Path(folder)
        configs.append(config)
    return configs


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter folder's ``adapter_config.json`` says, and its weights' size on disk (nothing is loaded)."""

    path: str
    base: str | None  # the base model it was trained on: a built-in's name when it names one's upstream hub id
    peft_type: str
    r: int | None
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def _other_base(trained: str, base_model: str, base_path: Path) -> tuple[bool | None, Path | None]:
    """Whether ``trained`` (an adapter's ``base_model_name_or_path``) is another model than ``base_model``, found at
    ``base_path``, and where ``trained`` was found (None: not here). False for the same name (``canonical_base``: a
    built-in named by its name or its hub id is one model) or the same path; True for a model of another
    architecture or other sizes (``model_shape``); None when ``trained`` or its metadata is not found here, and for
    another name and path of the same architecture and sizes: its copy, an export, its GGUF, or another model such as
    a fine-tune of it, which metadata cannot tell apart (callers warn, naming both paths)."""
    if canonical_base(trained) == canonical_base(base_model):
        return False, None
    try:
        other = resolve_model(trained).path
    except AgentlabError:
        return None, None
    if other.resolve() == base_path.resolve():
        return False, other
    shape = model_shape(other)
    if shape is None:
        return None, None
    return (None if shape == model_shape(base_path) else True), other


def _alike_warning(folder: str | Path, trained: str, other: Path, base_model: str, base_path: Path) -> None:
    """One warning: the adapter in ``folder`` was trained on ``trained`` (at ``other``), used on ``base_model`` (at
    ``base_path``), another name and path of the same architecture and sizes (:func:`_other_base`)."""
    log.warning("%s: trained on '%s' (%s), used on '%s' (%s): another name and path of the same architecture and "
                "sizes; fine if one is a copy or an export of the other, meaningless if they are different models "
                "(a fine-tune): use the adapter on the model it was trained on", folder, trained, other, base_model,
                base_path)


def check_adapter_base(path: Path, config: Mapping[str, Any], base_model: str, base: ModelRef, *, runs: str,
                       hint: str) -> None:
    """An adapter (``config``: its adapter_config.json) trained on another model than ``base_model`` (resolved:
    ``base``; :func:`_other_base`) is refused (``InputError``, exit 2) before any model loads: debate's agents,
    evolve's seeds; a base not found here cannot be compared: a warning; one of another name and path with the same
    architecture and sizes (a copy, or a fine-tune): a warning naming both paths. ``runs``: what runs on
    ``base_model`` (``every adapter agent runs on``); ``hint`` with ``{trained}`` and ``{base_model}`` in it."""
    trained = config.get("base_model_name_or_path")
    if not isinstance(trained, str):
        return
    differs, other = _other_base(trained, base_model, base.path)
    if differs is None and other is not None:
        _alike_warning(path, trained, other, base_model, base.path)
    elif differs is None:
        log.warning("%s: its base model '%s' cannot be read here, so it cannot be compared with base_model '%s'; "
                    "check that they are the same model", path, trained, base_model)
    elif differs:
        raise InputError(f"{path}: base model '{trained}' differs from base_model '{base_model}' (--base-model), "
                         f"which {runs}", hint=hint.replace("{trained}", trained).replace("{base_model}", base_model))


def warn_other_base(folder: str | Path, config: Mapping[str, Any], ref: str | Path) -> bool:
    """Log one warning (and return True) when the adapter's ``base_model_name_or_path`` names another model than
    ``ref``, the model it is put on (:func:`_other_base`): a LoRA for another model whose layers have the same sizes
    loads without an error and changes the model meaninglessly; a model of the same architecture and sizes at
    another name and path (a copy, an export, its GGUF, or a fine-tune of it: its metadata cannot tell them apart)
    gets a milder one naming both paths. False when its base, or ``ref``, is not found here (nothing to compare).
    Called once the adapter has loaded (the warning says it loads): one whose layers do not fit is refused as it
    loads, with no warning before the error."""
    trained = config.get("base_model_name_or_path")
    if not isinstance(trained, str) or not trained.strip():
        return False
    try:
        ours = resolve_model(str(ref)).path
    except AgentlabError:
        return False
    differs, other = _other_base(trained, str(ref), ours)
    if differs is None and other is not None:
        _alike_warning(folder, trained, other, str(ref), ours)
        return True
    if not differs:
        return False
    log.warning("%s: the adapter was trained on %s, not on %s; it loads (its layers have the same sizes), but what it "
                "does there is undefined: use it on the model it was trained on", folder, trained, ref)
    return True


def adapter_fingerprint(folder: Path) -> str | None:
    """The fingerprint of an adapter's weights: the sha256 of its weights file and of the config values that scale
    them (r, lora_alpha, use_rslora); None when the folder holds no weights. A run that used an adapter records it;
    a resume whose adapter changed on disk since (``train-persona --force`` again) is refused (evolve's seeds, a
    debate's agents, eval's rows), as what it made came from the old weights."""
    weights = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        return None
    with open(weights, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")  # the weights, then the values that scale them
    try:
        config = read_adapter(folder)
    except AgentlabError:
        config = {}
    digest.update(json.dumps([config.get(k) for k in ("r", "lora_alpha", "use_rslora")]).encode())
    return digest.hexdigest()

def find_adapters(directory: str | Path, unreadable: list[tuple[str, str]] | None = None) -> list[AdapterInfo]:
    """Every PEFT adapter folder under ``directory`` (recursively; itself included), sorted by path. Folders that
    are not adapters, fail :func:`read_adapter` or have a safetensors file whose header or tensors run past its end
    (appended to ``unreadable`` as (path, why) when given: `export` would refuse them) or are hidden (``.NAME.partial``
    while train-persona writes) are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found: list[AdapterInfo] = []
    for config_file in sorted(directory.rglob(ADAPTER_CONFIG)):
        folder = config_file.parent
        if any(part.startswith(".") for part in folder.relative_to(directory).parts):
            continue
        try:
            config = read_adapter(folder)
            check_weights(folder)  # cut short: listed as unreadable, as a cut GGUF is
        except AgentlabError as exc:  # a half-written or foreign folder: `models list` names it apart
            if unreadable is not None:
                unreadable.append((str(folder), exc.message))
            continue
        base = canonical_base(config.get("base_model_name_or_path"))
        rank = config.get("r")
        found.append(AdapterInfo(
            path=str(folder), base=base if isinstance(base, str) and base else None,
            peft_type=str(config["peft_type"]).lower(), r=rank if isinstance(rank, int) else None,
            size_bytes=sum(folder.joinpath(name).stat().st_size for name in ADAPTER_WEIGHTS
                           if folder.joinpath(name).is_file())))
    return found
