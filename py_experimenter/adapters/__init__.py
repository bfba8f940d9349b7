"""Adapters that run an experiment outside the executor's process: a container or a command.

The function adapter (the PyExperimenter signature) lives in :mod:`py_experimenter.executor`; this
package holds the adapters that follow the file contract of :mod:`py_experimenter.adapters.contract`.
The docker adapter imports the ``docker`` package only when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from py_experimenter.adapters.contract import AdapterOutcome, AdapterUnavailableError, ExperimentAdapter

if TYPE_CHECKING:
    from py_experimenter.config import ExperimentConfig

__all__ = ["AdapterOutcome", "AdapterUnavailableError", "ExperimentAdapter", "adapter_for"]


def adapter_for(config: ExperimentConfig) -> ExperimentAdapter:
    """The adapter for ``config.execution.adapter``: ``"docker"`` or ``"command"``.

    :raises ValueError: for ``"function"`` (the executor calls the function itself) or an unknown name.
    """
    kind = config.execution.adapter
    if kind == "docker":
        from py_experimenter.adapters.docker import DockerAdapter

        return DockerAdapter(config)
    if kind == "command":
        from py_experimenter.adapters.command import CommandAdapter

        return CommandAdapter(config)
    raise ValueError(f"no adapter class for Execution.adapter {kind!r}: the executor runs functions itself; "
                     "adapter_for handles 'docker' and 'command'")
