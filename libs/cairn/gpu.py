"""Is a CUDA GPU usable by XGBoost here? XGBoost falls back to CPU silently, so we check.

The trainer asks before it trains on a GPU, the gateway before it loads boosters onto one.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

import xgboost


@lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """(usable, why): needs an XGBoost built with CUDA and `nvidia-smi -L` listing a GPU."""
    if not xgboost.build_info().get("USE_CUDA", False):
        return False, "this xgboost build has no CUDA support (install the `gpu` extra)"
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return False, "nvidia-smi not found"
    try:
        listing = subprocess.run(
            [binary, "-L"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"nvidia-smi failed: {error}"
    if listing.returncode != 0 or "GPU" not in listing.stdout:
        return False, f"nvidia-smi lists no GPU (rc={listing.returncode})"
    return True, listing.stdout.strip().splitlines()[0]


def gpu_count() -> int:
    """How many GPUs `nvidia-smi -L` lists (0 when none is usable): SageMaker's SM_NUM_GPUS."""
    usable, _ = gpu_status()
    if not usable:
        return 0
    binary = shutil.which("nvidia-smi")
    assert binary is not None  # gpu_status found it
    listing = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=10)
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU"))
