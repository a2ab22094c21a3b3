"""`agentlab models`: make tiny local chat models, list the models and trained adapters on disk, check a models.yaml
against the disk."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from agentlab.core.files import human_size

from .common import JsonOpt, VerboseOpt, console, llm_path, nonempty_path, print_json, safe_text, setup_logging

app = typer.Typer(help="Local models: make-tiny, export-hf, list what is on disk, check a models.yaml.",
                  no_args_is_help=True)


def _path(value: str | Path) -> Path:
    return nonempty_path(value)


def _file(value: str | Path) -> Path:
    return nonempty_path(value, "the models YAML file")


@app.command("make-tiny")
def make_tiny(
    out: Annotated[Path, typer.Argument(help="Folder for the model (HF files) and OUT/model.gguf.", parser=_path)],
    seed: Annotated[int, typer.Option(help="Weight seed, 0 to 2^64-1: the same seed and options give the same files, "
                                      "in any folder.")] = 0,
    arch: Annotated[Literal["llama", "qwen2"], typer.Option(help="Architecture.")] = "llama",
    dtype: Annotated[Literal["f32", "f16"], typer.Option(help="GGUF tensor type (f32 matches transformers "
                                                                  "to ~1e-6).")] = "f32",
    quantize: Annotated[str | None, typer.Option(help="Also write OUT/model.KIND.gguf through llama.cpp's "
                                                      "quantizer (q8_0, q4_0, q4_k_m, ...).",
                                                 show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a model folder (one with config.json) as a whole, "
                                        "once the new model is complete; a folder of other files is refused.")] = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Build a small random-weight chat model offline (no model hub): a byte-level BPE tokenizer trained on text
    shipped with agentlab, a ChatML chat template, HF weights, and a GGUF export that llama.cpp loads.

    The model answers gibberish; it exists so tests, demos and benchmarks exercise real loading and generation.
    """
    setup_logging(verbose)
    from agentlab.core.models.gguf_export import QUANT_KINDS
    from agentlab.core.train.tiny import make_tiny as build

    if quantize is not None and quantize.lower() not in QUANT_KINDS:  # any case: Q8_0 as llama.cpp spells it
        from agentlab.core.errors import UsageError

        raise UsageError(f"--quantize: unknown kind '{quantize}'", hint=f"use one of: {', '.join(QUANT_KINDS)}")
    quantize = quantize.lower() if quantize is not None else None
    with console.status(f"building a tiny {arch} model in {safe_text(out)}"):
        paths = build(out, seed=seed, arch=arch, dtype=dtype, quantize=quantize, overwrite=force)
    if json_:
        print_json({role: str(path) for role, path in paths.items()})
        return
    width = max(5, *(len(role) for role in paths))  # q4_k_m is longer than hf, gguf and q8_0: all right-aligned on it
    for role, path in paths.items():
        size = sum(p.stat().st_size for p in path.iterdir() if p.suffix == ".safetensors") if path.is_dir() \
            else path.stat().st_size
        console.print(f"{role:>{width}}: {safe_text(path)} ({human_size(size)})")


@app.command("export-hf")
def export_hf(
    model: Annotated[str, typer.Argument(help="The model: a built-in name (smollm2-135m), a GGUF file, a "
                                              "transformers folder or a cached hub id.")],
    out: Annotated[Path, typer.Option("--out", help="The transformers folder to write.", parser=_path,
                                      metavar="<dir>")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing transformers folder (one with "
                                        "config.json, or an empty one); a folder of other files is refused.")] = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Write a model as a plain transformers folder (safetensors, tokenizer, chat template) that
    `AutoModelForCausalLM.from_pretrained`, PEFT, `lm_eval --model hf` and vLLM load without agentlab.

    A GGUF (the built-in among them) is de-quantized to float weights first, once (cached). Adapters that
    `agentlab train-persona` trains on the built-in name its upstream hub id as their base, so they load on this folder
    as they are: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(OUT), ADAPTER)`.
    """
    setup_logging(verbose)
    from agentlab.core.models.export import export_hf as write

    with console.status(f"writing {safe_text(model)} to {safe_text(out)}"):
        path = write(model, out, force=force)
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    if json_:
        print_json({"folder": str(path), "size_bytes": size})
    else:
        console.print(f"[bold]transformers folder[/]: {safe_text(path)} ({human_size(size)})")


def _fs_text(value: Any) -> Any:
    """``value`` (a string, or the strings in a list or dict) with the bytes of a file name that are not UTF-8
    (Python holds them as lone surrogates, ``\\udce9``) shown as backslash escapes (``\\xe9``): valid UTF-8 for
    JSON, one column per character in a table, the same spelling in both."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that is no escaped byte
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {key: _fs_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fs_text(item) for item in value]
    return value


def _shown(text: object) -> str:
    """``safe_text`` of a path or a message that names one (:func:`_fs_text` first)."""
    return safe_text(_fs_text("" if text is None else str(text)))


@app.command("list")
def list_models(
    directory: Annotated[Path, typer.Argument(help="Folder to scan (GGUF files and HF model folders).",
                                              parser=_path)] = Path("models"),
    adapters: Annotated[Path, typer.Option("--adapters", parser=_path, help="Folder to scan for PEFT adapter "
                                           "folders (what `agentlab train-persona --out` writes).")] = Path("adapters"),
    json_: JsonOpt = False,
) -> None:
    """List the built-in models (name them anywhere a model is named, e.g. `file: smollm2-135m`), the local models
    under a folder and the trained adapters under `adapters/` with their base model, from what their metadata says
    (nothing is loaded)."""
    from agentlab.core.errors import UsageError
    from agentlab.core.models.adapters import find_adapters
    from agentlab.core.models.builtin import builtin_status
    from agentlab.core.models.modelfiles import GGUFInfo, find_local_models

    for given, default, what in ((directory, Path("models"), "models folder"),
                                 (adapters, Path("adapters"), "--adapters folder")):
        if given.exists() and not given.is_dir():
            raise UsageError(f"{given}: {what} is a file", hint="give the folder that holds them")
        if not given.exists() and given != default:
            raise UsageError(f"{given}: {what} not found", hint="give an existing folder (default: "
                             f"{default}/ when it exists)")
    unreadable: list[tuple[str, str]] = []
    found = find_local_models(directory, unreadable)
    trained = find_adapters(adapters, unreadable)
    builtins = builtin_status()
    if json_:
        print_json(_fs_text([{"format": "gguf" if isinstance(m, GGUFInfo) else "hf", **m.to_dict()} for m in found]
                            + [{"format": "adapter", **a.to_dict()} for a in trained]
                            + [{"format": "builtin", **b} for b in builtins]
                            + [{"format": "unreadable", "path": path, "error": why} for path, why in unreadable]))
        return
    from rich.table import Table

    table = Table(title="built-in models", title_justify="left", pad_edge=False)
    for column in ("name", "installed", "size"):
        table.add_column(column, no_wrap=True)
    table.add_column("source", overflow="fold", min_width=16)
    table.add_column("path", overflow="fold", min_width=20)
    for b in builtins:
        # a split model whose parts are installed is assembled (and its sha256 checked) on first use
        installed = ("[green]yes[/]" if b["assembled"] is not False else "[green]yes[/] (parts)") if b["installed"] \
            else "[red]no[/]"
        size = b["size_bytes"]
        table.add_row(_shown(b["name"]), installed, human_size(size if isinstance(size, int) else None),
                      _shown(f"{b['source']}; {b['license']}"), _shown(b["path"] or "-"))
    console.print(table)
    for b in builtins:
        if not b["installed"]:
            console.print("  " + _shown(f"{b['name']}: not installed; {b['install']}"), highlight=False)
    for path, why in unreadable:  # found, but not readable: named, never silently left out
        named = why.startswith((path, str(Path(path).resolve())))  # the reason names its file (most do)
        console.print(f"[red]unreadable[/]: {_shown(why if named else f'{path}: {why}')}", highlight=False)
    if not found:
        readable = " readable" if any(Path(p).is_relative_to(directory) for p, _ in unreadable) else ""
        console.print(f"no{readable} models under {_shown(directory)}/ (make one with `agentlab models make-tiny "
                      f"{_shown(directory)}/tiny`)")
    else:
        table = Table(title=f"models under {_shown(directory)}/", title_justify="left", pad_edge=False)
        table.add_column("path", overflow="fold", min_width=20)
        for column in ("format", "arch", "type", "size", "layers", "ctx", "template"):
            table.add_column(column, no_wrap=True)
        for m in found:
            is_gguf = isinstance(m, GGUFInfo)
            arch = m.arch.removesuffix("ForCausalLM").lower()
            shown = os.path.relpath(m.path, directory)  # "." for an HF folder that is the directory itself
            # Paths and metadata strings come from the files: shown escaped, never as terminal controls or markup.
            table.add_row(_shown(shown), "gguf" if is_gguf else "hf", _shown(arch),
                          _shown(m.file_type if isinstance(m, GGUFInfo) else (m.dtype or "-")),
                          human_size(m.size_bytes), str(m.n_layers or "-"), str(m.n_ctx_train or "-"),
                          "yes" if m.chat_template else "no")
        console.print(table)
    if not trained:
        readable = " readable" if any(Path(p).is_relative_to(adapters) for p, _ in unreadable) else ""
        console.print(f"no{readable} adapters under {_shown(adapters)}/ (train one with `agentlab train-persona "
                      f"--out {_shown(adapters)}/NAME`)")
        return
    table = Table(title=f"adapters under {_shown(adapters)}/", title_justify="left", pad_edge=False)
    table.add_column("path", overflow="fold", min_width=12)
    for column in ("type", "rank", "size"):
        table.add_column(column, no_wrap=True)
    table.add_column("base model", overflow="fold", min_width=12)
    for a in trained:
        table.add_row(_shown(os.path.relpath(a.path, adapters)), _shown(a.peft_type), str(a.r or "-"),
                      human_size(a.size_bytes), _shown(a.base or "-"))
    console.print(table)


@contextlib.contextmanager
def _assembly_lines() -> Iterator[None]:
    """The line the built-in models' module logs when it assembles a split model's GGUF from its parts (once, about
    1.6 GB for both Qwen models), printed on the console: `check` otherwise writes that much to the cache without a
    word, whether or not logging is set up."""
    logger = logging.getLogger("agentlab.core.models.builtin")

    class Say(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console.print(f"[cyan]{_shown(record.getMessage())}[/]", highlight=False)

    handler, propagate = Say(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # said once, not again by a handler set up elsewhere
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@app.command("check")
def check(
    models_file: Annotated[Path | None, typer.Argument(help="The models file (as `agentlab pipeline run --models`; "
                                                       "default configs/models.yaml).", show_default=False,
                                                       parser=_file)] = None,
    config: Annotated[Path | None, typer.Option("-c", "--config", help="Same as the argument.",
                                                show_default=False, parser=_file, metavar="<path>")] = None,
    llm: Annotated[Path | None, typer.Option("--llm", help="The routing config whose models `routed:` names (as "
                                             "`agentlab pipeline run --llm`; default configs/llm.yaml when present).",
                                             show_default=False, metavar="FILE|MODEL", parser=llm_path)] = None,
    json_: JsonOpt = False,
) -> None:
    """Which models of a models file exist on disk, their type and size, and the memory each needs at its configured
    context (weights + KV cache + compute margin) against the free memory, alone and, as `pipeline run` loads them,
    the required ones together. A routed model is looked up in the routing config. Nothing is loaded; a built-in
    model split into parts (qwen2.5-coder-*) is assembled into the cache once, on first use, and a line says so.

    Exits 1 when a model the base pipeline requires is missing or does not fit, or they do not fit together; 2 for a
    models file that cannot be read or names no models.
    """
    from agentlab.core.errors import ConfigError, UsageError
    from agentlab.pipeline.load import load_models
    from agentlab.pipeline.models import check_models, check_together

    if config is not None and models_file is not None and config != models_file:
        raise UsageError(f"two models files given: {models_file} and -c {config}", hint="give one of them")
    models_file = config or models_file or Path("configs/models.yaml")
    with _assembly_lines():  # a split built-in (the Qwen models) is assembled on first use, here too
        cfg = load_models(models_file)
        if not cfg.models:  # `config show models` writes `models: {}`: an empty table and exit 0 said nothing
            raise ConfigError(f"{models_file}: no models under `models:`, nothing to check",
                              hint="add one, e.g. `models: {tiny: {file: tiny/model.gguf}}` (`agentlab models "
                              "make-tiny models/tiny` makes that file; configs/models.yaml has more examples)")
        if llm is not None and not any(cfg.backend(name) == "routed" for name in cfg.models):
            # given, not silently left unread (as `pipeline run` refuses it); before a built-in model is assembled
            raise UsageError(f"--llm {llm}: no model of {models_file} is routed, so no routing config is read",
                             hint="drop --llm, or give a model `routed: NAME` in the models file")
        statuses = check_models(cfg)
    unchecked = _check_routed(cfg, statuses, llm, models_file)
    together = check_together(cfg, statuses)
    failed = [s.name for s in statuses if s.required and (not s.ok or s.name in unchecked)]
    apart = together is not None and together["fits"] is False
    if json_:
        print_json({"models": [{**s.to_dict(), **({"ok": None} if s.name in unchecked else {})} for s in statuses],
                    "together": together, "ok": not failed and not apart})
    else:
        from rich.table import Table

        rows = [{key: safe_text(value) for key, value in s.cells().items()} for s in statuses]
        for s, cells in zip(statuses, rows, strict=True):
            if s.name in unchecked:
                cells["on disk"] = "not checked"
        table = Table(title=f"models of {safe_text(models_file)}", title_justify="left", pad_edge=False)
        # On a narrow terminal the names and types fold onto more lines; the short columns keep their width (all of
        # them no_wrap, rich cut every one, "fits" down to "…", at 80 columns for the Qwen models' names).
        table.add_column("model", overflow="fold", min_width=12)
        for column in ("backend", "on disk", "type", "size", "needs", "fits"):
            widest = max([len(column), *(len(cells[column].split(" (")[0]) for cells in rows)])
            if column == "type":  # "q4_k_m (declared q4_0)": the declared part may fold
                table.add_column(column, overflow="fold", min_width=widest)
            else:
                table.add_column(column, no_wrap=True, min_width=widest)
        colour = {"yes": "[green]yes[/]", "missing": "[red]missing[/]", "no": "[red]no[/]",
                  "unreadable": "[red]unreadable[/]"}
        for s, cells in zip(statuses, rows, strict=True):
            kind = (f"[red]{safe_text(s.quantization_found)}[/] (declared {safe_text(s.quantization)})"
                    if s.quantization_mismatch else cells["type"])
            name = cells["model"] if s.required else f"{cells['model']} [dim](optional)[/]"
            table.add_row(name, s.backend, colour.get(cells["on disk"], cells["on disk"]), kind, cells["size"],
                          cells["needs"], colour.get(cells["fits"], cells["fits"]))
        if together is not None:
            fits = "-" if together["fits"] is None else "yes" if together["fits"] else "no"
            table.add_section()
            table.add_row("together", "", "", "", "", human_size(together["needs_bytes"]), colour.get(fits, fits))
        console.print(table)
        for s in statuses:  # notes under the table: a narrow terminal would fold a column of sentences to nothing
            if s.estimate is not None:
                console.print(f"  {safe_text(s.estimate.describe())}")
            if s.note:
                console.print(f"  {safe_text(s.name)}: {safe_text(s.note)}", highlight=False)
        if together is not None:
            console.print(f"  together: {safe_text(together['note'])}", highlight=False)
    if failed:
        console.print(f"[red]not ready:[/] {safe_text(', '.join(failed))} (required by the base pipeline)")
    if apart:
        console.print("[red]not ready:[/] the required models do not fit together (`pipeline run` loads them at once)")
    if failed or apart:
        raise typer.Exit(1)


def _check_routed(cfg: Any, statuses: list[Any], llm: Path | None, models_file: Path) -> set[str]:
    """Look each routed model up in the routing config (``llm``, else configs/llm.yaml when present), as `pipeline
    run` does before it starts: one it lacks is missing. Returns the names that could not be checked (no routing
    config), which are neither ok nor missing."""
    from agentlab.core.llm.config import DEFAULT_LLM_CONFIG, load_llm_config

    routed = [s for s in statuses if s.backend == "routed"]
    if not routed:
        return set()
    if llm is None and not DEFAULT_LLM_CONFIG.is_file():
        for s in routed:
            s.note = (f"routed: '{cfg.models[s.name].routed}': not checked, no routing config ({DEFAULT_LLM_CONFIG} "
                      "is not there; pass --llm FILE)")
        return {s.name for s in routed}
    routing = load_llm_config(llm)
    source = llm or DEFAULT_LLM_CONFIG
    for s in routed:
        name = cfg.models[s.name].routed
        if name in routing.models:
            s.note = f"routed: '{name}' of {source} (provider {routing.models[name].provider})"
        else:
            s.exists = False  # what `pipeline run` refuses before it starts
            s.note = (f"routed: '{name}' is not a model of the routing config {source} (known: "
                      f"{', '.join(routing.models) or 'none'})")
    return set()
