"""GPU detection lives in the kernel (`cairn.gpu`) since the gateway needs it too."""

from __future__ import annotations

from cairn.gpu import gpu_count, gpu_status

__all__ = ["gpu_count", "gpu_status"]
