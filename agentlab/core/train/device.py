"""Re-exports :mod:`agentlab.core.models.device` for agentlab/compress/run.py and agentlab/nas/run.py, which helper
"planner" restructures: their owner points them at agentlab.core.models.device after merging, and this module goes."""

from agentlab.core.models.device import resolve_device_dtype

__all__ = ["resolve_device_dtype"]
