"""The command line every launched executor runs: ``python -m py_experimenter run CONFIG ...``."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ExecutorCommand:
    """``py-experimenter run`` as one launched executor runs it.

    :param config: the experiment file (made absolute: executors may start in another folder).
    :param credentials: the credential file, if any (absolute too).
    :param function: ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``; None for the
        docker / command adapters.
    :param run_args: further ``run`` options, e.g. ``("--max-experiments", "10")``.
    :param env: environment variables the executor gets on top of its own.
    """

    config: str
    credentials: str | None = None
    function: str | None = None
    table: str | None = None
    database: str | None = None
    run_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, config: str | os.PathLike[str], credentials: str | os.PathLike[str] | None = None,
               function: str | None = None, *, table: str | None = None, database: str | None = None,
               run_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> ExecutorCommand:
        """An executor command with the file paths made absolute (against the current folder);
        a ``file.py:CALLABLE`` function path too."""
        if function and ":" in function:
            module, _, name = function.rpartition(":")
            if module.endswith(".py"):
                function = f"{os.path.abspath(module)}:{name}"
        return cls(
            config=os.path.abspath(config),
            credentials=os.path.abspath(credentials) if credentials else None,
            function=function, table=table, database=database, run_args=tuple(run_args), env=dict(env or {}),
        )

    def argv(self, python: str | None = None) -> list[str]:
        """The executor's command line, run by ``python`` (default: this interpreter)."""
        argv = [python or sys.executable, "-m", "py_experimenter", "run", self.config]
        for option, value in (("--credentials", self.credentials), ("--function", self.function),
                              ("--table", self.table), ("--database", self.database)):
            if value:
                argv += [option, value]
        return argv + list(self.run_args)

    def shell(self, python: str | None = None) -> str:
        """:meth:`argv` quoted for a POSIX shell (a remote ``ssh`` command, a batch script)."""
        return shlex.join(self.argv(python))


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'py-experimenter[extra]'``."""
    import importlib

    from py_experimenter.exceptions import MissingExtraError

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{purpose} needs the {module} package, which is not installed; "
            f"install it with: pip install 'py-experimenter[{extra}]'"
        ) from None
