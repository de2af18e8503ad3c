"""What a job returns and what it writes to: the two types every job and stage share.

They live below every layer but the core (docs/extending.md, "Layers"), so that a data,
evaluation or training job returns a JobResult without importing the runner that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class JobResult:
    metrics: dict[str, Any]
    outputs: dict[str, Path] = field(default_factory=dict)  # e.g. {"model": <run dir>/model}
    # run.json's; a pipeline handed to cluster jobs: submitted; one stopped at pipeline.until:
    # paused (the next job resumes it)
    status: str = "completed"


@dataclass
class Run:
    """What a job writes to: its directory, its run.json, its tracker."""

    dir: Path
    record: Any
    tracker: Any
    rank: int = 0  # of the processes srun or torchrun started for this job: only 0 records
