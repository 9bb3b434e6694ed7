"""A1111's `lyco_helpers`: the LyCORIS tensor rebuilds, from `modules.lora_types` (no second copy)."""
from modules.lora_types import (
    factorization,
    make_kron,
    make_weight_cp,
    rebuild_conventional,
    rebuild_cp_decomposition,
)

__all__ = ["factorization", "make_kron", "make_weight_cp", "rebuild_conventional", "rebuild_cp_decomposition"]
