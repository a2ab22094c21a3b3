"""Energy and CO2e of a block of work through codecarbon's offline tracker, what was measured kept apart from what
was estimated: ``mode`` is "measured" only when every component read a power meter (RAPL, powermetrics, NVML, ...),
"estimated" when none did (the CPU as its TDP times its load; RAM always from a model), else "partly measured". A
component whose method cannot be told counts as estimated. No network, files, lock file or signal handlers;
codecarbon's log kept at errors. CO2e uses the yearly carbon intensity of ``country_iso_code`` (the default "USA" is
codecarbon's example, not where this machine is).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from agentlab.core.errors import InputError, missing_package

DEFAULT_COUNTRY = "USA"
# codecarbon CPU modes that read a power meter; every other mode (cpu_load, constant) is TDP arithmetic.
METERED_CPU_MODES = {"intel_rapl": "RAPL", "intel_power_gadget": "Intel Power Gadget", "windows_emi": "Windows EMI"}


@dataclass
class Energy:
    """What :func:`track_energy` found for its block (filled when the block ends)."""

    energy_kwh: float = 0.0
    co2e_kg: float = 0.0
    mode: str = "estimated"  # measured | partly measured | estimated
    components: dict[str, str] = field(default_factory=dict)  # cpu/gpu/ram -> "measured: RAPL", "estimated: ..."
    cpu_kwh: float = 0.0
    gpu_kwh: float = 0.0
    ram_kwh: float = 0.0
    duration_s: float = 0.0
    country_iso_code: str = DEFAULT_COUNTRY


@contextmanager
def track_energy(*, country_iso_code: str = DEFAULT_COUNTRY) -> Iterator[Energy]:
    """Energy (kWh) and CO2e (kg) of the ``with`` block; the yielded :class:`Energy` is filled when the block ends.

    CPU and RAM estimates follow this process's share of the load (codecarbon's "process" mode; a meter such as RAPL
    still reads the whole package), sampled every second. ``MissingPackage`` naming the extra ``compress`` when
    codecarbon is absent; ``InputError`` for a country codecarbon has no data for."""
    tracker = _tracker(country_iso_code.upper())
    result = Energy(country_iso_code=country_iso_code.upper())
    tracker.start()
    try:
        yield result
    finally:
        tracker.stop()
        _fill(result, tracker)


def check_country(country: str) -> None:
    """``InputError`` (exit 2) for a country codecarbon has no carbon intensity for, ``MissingPackage`` without
    codecarbon: checked before a run folder exists (it failed at the base model's measurement, in a new folder)."""
    try:
        from codecarbon.input import DataSource
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    if country.upper() not in DataSource().get_global_energy_mix_data():
        raise InputError(f"measure.country: no carbon-intensity data for country '{country}'",
                         hint="give a 3-letter ISO code such as USA, FRA, DEU, GBR, IND, CHN")


def _tracker(country: str) -> Any:
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    check_country(country)
    # Its constructor logs at INFO (and warns that multiple runs are allowed) before it applies log_level.
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    return OfflineEmissionsTracker(country_iso_code=country, tracking_mode="process", measure_power_secs=1.0,
                                   output_methods=[], allow_multiple_runs=True, log_level="error")


def _fill(result: Energy, tracker: Any) -> None:
    data = tracker.final_emissions_data
    result.energy_kwh = float(data.energy_consumed)
    result.co2e_kg = float(data.emissions)
    result.cpu_kwh, result.gpu_kwh, result.ram_kwh = (float(data.cpu_energy), float(data.gpu_energy),
                                                      float(data.ram_energy))
    result.duration_s = float(data.duration)
    result.components = component_methods(getattr(tracker, "_hardware", []))
    measured = [m.startswith("measured") for m in result.components.values()]
    result.mode = ("measured" if measured and all(measured) else "partly measured" if any(measured)
                   else "estimated")


def component_methods(hardware: list[Any]) -> dict[str, str]:
    """``{"cpu": "measured: RAPL" | "estimated: ...", "ram": ..., "gpu": ...}`` from a codecarbon tracker's
    ``_hardware`` list (codecarbon 3.x keeps no public record of the method). Unknown objects read as estimated."""
    out: dict[str, str] = {}
    for hw in hardware:
        kind = type(hw).__name__
        if kind == "CPU":
            mode, tdp = getattr(hw, "_mode", "unknown"), getattr(hw, "_tdp", "?")
            out["cpu"] = (f"measured: {METERED_CPU_MODES[mode]}" if mode in METERED_CPU_MODES
                          else f"estimated: TDP {tdp} W x CPU load" if mode == "cpu_load"
                          else f"estimated: TDP {tdp} W x a constant share" if mode == "constant"
                          else f"estimated: {mode}")
        elif kind == "GPU":
            out["gpu"] = "measured: NVML / AMD SMI"
        elif kind in ("AppleSiliconChip", "Raspberry"):
            part = str(getattr(hw, "chip_part", "cpu")).lower()
            out[part] = f"measured: {'powermetrics' if kind == 'AppleSiliconChip' else 'Raspberry Pi PMIC'}"
        elif kind == "RAM":
            out["ram"] = "estimated: RAM power model"
        else:
            out[kind.lower()] = "estimated: unknown method"
    return out
