"""Training events beyond the core ones (owner: the trainer).

A GPU job that the worker which read it cannot run on a GPU is handed on as a
`GpuTrainingJobRequested` on its own topic, consumed only by the GPU pool's group, so the
autoscaler sizes that pool on its own lag and a CPU worker never trains it by accident.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.catalogue import event
from cairn.contracts.events import TrainingJobRequested


@event(owner="trainer", key="job_name", partitions=4, required_scope="train")
class GpuTrainingJobRequested(BaseModel):
    """A training job that needs a GPU worker (handed on by a worker without one)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    job_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    request: TrainingJobRequested
