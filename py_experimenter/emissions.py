"""Optional CodeCarbon emission tracking, one tracker run per experiment.

CodeCarbon is an extra (``pip install 'py-experimenter[codecarbon]'``). When it is missing,
tracking is skipped with one warning per process and experiments run as usual.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from py_experimenter.queue import Experiment, ExperimentQueue

logger = logging.getLogger("py-experimenter")
_warned = False


def codecarbon_available() -> bool:
    """True when the codecarbon package can be imported; warns once per process when not."""
    global _warned
    try:
        importlib.import_module("codecarbon")
    except ImportError:
        if not _warned:
            warnings.warn(
                "use_codecarbon is on but codecarbon is not installed; emissions are not tracked. "
                "Install it with: pip install 'py-experimenter[codecarbon]', or pass use_codecarbon=False",
                stacklevel=3,
            )
            _warned = True
        return False
    return True


class EmissionsRecorder:
    """Starts a CodeCarbon tracker per experiment and stores its figures in ``<table>_codecarbon``."""

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = dict(settings)
        self._tracker: Any = None

    def start(self) -> None:
        codecarbon = importlib.import_module("codecarbon")
        options = {k: v for k, v in self.settings.items() if k != "offline_mode"}
        options.setdefault("save_to_file", False)
        options.setdefault("log_level", "error")
        cls = codecarbon.OfflineEmissionsTracker if self.settings.get("offline_mode") else codecarbon.EmissionsTracker
        try:
            self._tracker = cls(**options)
            self._tracker.start()
        except Exception as err:  # a tracker problem must never fail the experiment
            logger.warning("codecarbon tracker could not start: %s", err)
            self._tracker = None

    def stop(self, queue: ExperimentQueue, experiment: Experiment) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return
        try:
            tracker.stop()
            data = dict(tracker.final_emissions_data.values)
        except Exception as err:
            logger.warning("codecarbon tracker could not stop: %s", err)
            return
        table = queue.db.schema.codecarbon
        data["codecarbon_timestamp"] = data.pop("timestamp", None)
        data["offline_mode"] = bool(self.settings.get("offline_mode", False))
        row = {c.name: (data.get(c.name) if data.get(c.name) != "" else None) for c in table.columns
               if c.name not in ("ID", "experiment_id")}
        with queue.db.begin() as conn:
            conn.execute(sa.insert(table).values(experiment_id=experiment.id, **row))
