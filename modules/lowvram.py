"""A1111's `modules.lowvram` names extensions call. Serena does not split the model across devices
for --lowvram/--medvram, so nothing is ever in low-VRAM mode and the functions change nothing."""
from __future__ import annotations

from typing import Any


def is_needed(sd_model: Any) -> bool:
    return False


def is_enabled(sd_model: Any) -> bool:
    return bool(getattr(sd_model, "lowvram", False))


def apply(sd_model: Any) -> None:
    """Nothing to set up (see the module doc)."""


def setup_for_low_vram(sd_model: Any, use_medvram: bool) -> None:
    """Nothing to set up (see the module doc)."""


def send_everything_to_cpu() -> None:
    """Nothing is parked by this module, so nothing moves."""
