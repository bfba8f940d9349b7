"""Which table an adapter works for, beyond its name: tables of the same name in other
databases (another SQLite file, server, port or database) must never touch each other's
containers or attempt folders."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from py_experimenter.exceptions import ConfigError

if TYPE_CHECKING:
    from py_experimenter.db.database import Database

__all__ = ["OWNER_FILE", "owner_of", "results_folder", "table_scope"]

logger = logging.getLogger("py-experimenter")

#: The file in ``<results_dir>/<table>/`` that says which database's table owns the folder.
OWNER_FILE = ".py_experimenter-table"
_DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}


def table_scope(db: Database) -> tuple[str, str]:
    """(id, description) of the table ``db`` holds: a stable hash of backend, host, port,
    database (a SQLite file's real path) and table name; never user or password."""
    url = db.url
    if db.backend == "sqlite":
        name = url.database or ":memory:"
        where = name if name == ":memory:" else os.path.realpath(name)
    else:
        port = url.port or _DEFAULT_PORTS.get(db.backend)
        where = f"{(url.host or 'localhost').lower()}:{port}/{url.database or ''}"
    description = f"{db.backend} {where} table {db.schema.main.name}"
    return hashlib.sha256(description.encode("utf-8")).hexdigest()[:16], description


def owner_of(folder: Path, scope: str, description: str) -> str:
    """The scope that owns ``folder``: claimed for ``scope`` if nobody did yet (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OWNER_FILE
    if not marker.exists():
        temporary = folder / f"{OWNER_FILE}.{uuid.uuid4().hex}"
        temporary.write_text(f"{scope}\n{description}\n", encoding="utf-8")
        try:
            os.link(temporary, marker)  # fails if another executor claimed it first
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return marker.read_text(encoding="utf-8").split("\n", 1)[0].strip()


def results_folder(root: Path, table: str, scope: str, description: str, source: str) -> Path:
    """``root/<table>`` if this scope owns it (or nobody did yet), else ``root/<table>.<scope>``."""
    folder = root / table
    owner = owner_of(folder, scope, description)
    if owner == scope:
        return folder
    scoped = root / f"{table}.{scope}"
    logger.warning("results folder %s belongs to a table %r of another database (%s); this table (%s) writes its "
                   "attempts to %s", folder, table, owner, description, scoped)
    if owner_of(scoped, scope, description) != scope:
        raise ConfigError(f"results folder {scoped} belongs to another table; remove its {OWNER_FILE} or choose "
                          "another results_dir", source=source, key_path="PY_EXPERIMENTER.Execution.results_dir")
    return scoped
