"""Relative paths inside a Hydra job resolved against the folder the user started it from.

With ``@hydra.main(version_base="1.1")`` (PyExperimenter 1.4.2's documented pattern) or
``hydra.job.chdir=True``, Hydra changes the working directory of each job to its output folder
(``outputs/<date>/<time>`` or ``multirun/.../<job number>``). A ``PyExperimenter("config/x.yml")``
in the task would then look for ``outputs/.../config/x.yml``, and a SQLite database file would be
created once per job in each job's folder. These helpers undo that: Hydra is consulted only when
it is already imported and running, so nothing here imports Hydra otherwise.
"""

from __future__ import annotations

import os
import sys

from sqlalchemy.engine import URL

__all__ = ["hydra_original_cwd", "resolve_against_original_cwd", "resolve_sqlite_url"]


def hydra_original_cwd() -> str | None:
    """The folder the running Hydra app was started from, when it differs from the current
    one; None when Hydra is not imported, not running a job, or did not change directory."""
    if "hydra" not in sys.modules:
        return None
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    try:
        cwd = str(HydraConfig.get().runtime.cwd)
    except Exception:  # a Hydra config without runtime.cwd (compose API): nothing to undo
        return None
    if not cwd or not os.path.isabs(cwd) or os.path.realpath(cwd) == os.path.realpath(os.getcwd()):
        return None
    return cwd


def resolve_against_original_cwd(path: str | os.PathLike[str], must_exist: bool = True) -> str | os.PathLike[str]:
    """``path`` unchanged, or joined to Hydra's original folder when it is relative, Hydra
    changed directory, and (with ``must_exist``) the file is not in the current folder but is
    in the original one (a file in neither stays as given, for the caller's fallbacks and errors)."""
    original = hydra_original_cwd()
    if original is None or not isinstance(path, str | os.PathLike) or os.path.isabs(path):
        return path
    joined = os.path.join(original, os.fspath(path))
    if must_exist and (os.path.exists(path) or not os.path.exists(joined)):
        return path
    return joined


def resolve_sqlite_url(url: URL) -> URL:
    """A SQLite URL naming a relative database file, made absolute against Hydra's original
    folder (so that every job of a sweep shares one file); other URLs unchanged."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:") or os.path.isabs(database):
        return url
    resolved = resolve_against_original_cwd(database, must_exist=False)
    return url if resolved == database else url.set(database=os.fspath(resolved))
