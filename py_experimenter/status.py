"""The states an experiment row moves through (values as in PyExperimenter 1.4.2)."""

from __future__ import annotations

from enum import Enum


class ExperimentStatus(str, Enum):
    """Status of one experiment row; the value is what the ``status`` column stores."""

    CREATED = "created"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    PAUSED = "paused"
    ALL = "all"

    def __str__(self) -> str:
        return self.value
