"""A Hydra ``--multirun`` sweep turned into table rows, without running them.

This is the work of the launcher plugin ``hydra/launcher=py_experimenter`` (written in
``py_experimenter/hydra_plugin``, installed as ``hydra_plugins.py_experimenter_launcher``):
each job of the sweep becomes one experiment row,
and the side table ``<table>__hydra`` keeps what is needed to rebuild the job's exact composed
config later (its overrides, the config source and name, Hydra's version base, the task
function). Executors then run the rows with :func:`py_experimenter.hydra_task.run_hydra_task`.
A row that is already there (same keyfield values) is not added again and keeps its first
side-table entry, so running the same sweep again adds nothing.

How a swept parameter maps onto a keyfield (keyfield names cannot contain dots): the override
key ``a.b.c`` maps to the keyfield ``a_b_c`` if there is one, else to the keyfield ``c`` (its last
component). Every keyfield takes its value from the job's composed config: the mapped override's
key, else the key of the keyfield's own name; a config group (``model=resnet``) gives its chosen
option's name (``resnet``). A parameter that differs between the jobs of a sweep must map to a
keyfield, else two jobs would be one row: that is a :class:`HydraSweepError` listing the keyfields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from py_experimenter.db.database import Database
from py_experimenter.exceptions import ConfigError
from py_experimenter.fill import fill_rows
from py_experimenter.grid import RowCanonicalizer
from py_experimenter.single_run import unconfigured_values

__all__ = ["HYDRA_SUFFIX", "HydraJob", "HydraSweepError", "SweepReport", "drop_hydra_table", "hydra_table",
           "job_keyfields", "keyfield_for", "lookup_job", "record_sweep", "swept_keys"]

HYDRA_SUFFIX = "hydra"


class HydraSweepError(ConfigError):
    """A Hydra sweep that cannot become table rows (a swept key that is no keyfield, a keyfield
    with no value in the composed config)."""


@dataclass(frozen=True)
class HydraJob:
    """One job of a sweep as the side table keeps it."""

    experiment_id: int
    overrides: tuple[str, ...]
    config_source: str  #: ``file:///abs/conf`` or ``pkg://module.path``
    config_name: str | None
    version_base: str | None
    task_function: str  #: ``MODULE:QUALNAME`` or ``/abs/file.py:QUALNAME``
    run_dir: str | None


@dataclass(frozen=True)
class SweepReport:
    """What a sweep added: ``added`` new rows, ``existing`` rows that were already there."""

    added: int
    existing: int
    experiment_ids: tuple[int, ...]
    #: rows already there whose earlier sweep had other overrides (the first ones are kept).
    changed: int = 0
    #: per keyfield, the swept values that are not among the experiment file's ``values``.
    unconfigured: Mapping[str, list[Any]] = field(default_factory=dict)


def hydra_table(db: Database) -> sa.Table:
    """The side table ``<table>__hydra`` in the experimenter's metadata (so that
    ``delete_table()`` drops it too); created when missing."""
    metadata = db.schema.metadata
    name = f"{db.schema.main.name}__{HYDRA_SUFFIX}"
    if name in metadata.tables:
        return metadata.tables[name]
    table = sa.Table(
        name, metadata,
        sa.Column("experiment_id", sa.Integer, primary_key=True, autoincrement=False),
        #: the row's keyhash when the entry was written: an entry left by a dropped table whose
        #: ID a new row reuses does not match it and is replaced.
        sa.Column("keyhash", sa.String(32), nullable=False),
        sa.Column("overrides", sa.Text, nullable=False),
        sa.Column("config_source", sa.Text, nullable=False),
        sa.Column("config_name", sa.String(255)),
        sa.Column("version_base", sa.String(16)),
        sa.Column("task_function", sa.Text, nullable=False),
        sa.Column("run_dir", sa.Text),
    )
    with db.begin() as conn:
        table.create(conn, checkfirst=True)
    return table


def drop_hydra_table(db: Database) -> None:
    """Drop ``<table>__hydra`` if it exists (with the experiment table)."""
    name = f"{db.schema.main.name}__{HYDRA_SUFFIX}"
    table = db.schema.metadata.tables.get(name)
    if table is not None:
        db.schema.metadata.remove(table)  # hydra_table() creates it again
    with db.begin() as conn:
        sa.Table(name, sa.MetaData()).drop(conn, checkfirst=True)


def _override_key(override: str) -> str:
    key = override.split("=", 1)[0].strip()
    key = key.lstrip("+~")
    return key.split("@", 1)[0]  # group@package


def keyfield_for(key: str, keyfields: Sequence[str]) -> str | None:
    """The keyfield that the override key ``key`` maps to (see the module docstring), or None."""
    joined = key.replace(".", "_")
    if joined in keyfields:
        return joined
    last = key.rsplit(".", 1)[-1]
    return last if last in keyfields else None


def swept_keys(jobs: Sequence[Sequence[str]]) -> list[str]:
    """The override keys whose value differs between ``jobs`` (Hydra's own ``hydra.*`` aside;
    a key that some jobs do not override at all counts as differing)."""
    per_job = []
    for overrides in jobs:
        values = {}
        for override in overrides:
            key = _override_key(override)
            if key != "hydra" and not key.startswith("hydra."):
                values[key] = override.split("=", 1)[-1]
        per_job.append(values)
    keys = dict.fromkeys(key for values in per_job for key in values)
    return [key for key in keys if len({values.get(key, "\0absent") for values in per_job}) > 1]


def _value_at(cfg: Any, choices: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    choice = choices.get(path.replace(".", "/"))
    if choice is not None:
        return True, str(choice)
    missing = object()
    value = OmegaConf.select(cfg, path, default=missing)
    if value is missing:
        return False, None
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    return True, value


def _config_paths(cfg: Any, choices: Mapping[str, Any]) -> list[str]:
    """Every leaf key of the job's config (``a.b.c``; Hydra's own node aside) and its groups."""
    from omegaconf import DictConfig

    paths: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key in node:
            path = f"{prefix}{key}"
            if path == "hydra":
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                walk(child, f"{path}.")
            else:
                paths.append(path)

    if isinstance(cfg, DictConfig):
        walk(cfg, "")
    groups = [str(g).replace("/", ".") for g in choices if not str(g).startswith("hydra")]
    return paths + [g for g in groups if g not in paths]


def _path_for(name: str, paths: Sequence[str], keyfields: Sequence[str], table: str) -> str | None:
    """The config key that keyfield ``name`` takes its value from (the mapping rule, reversed)."""
    exact = [p for p in paths if p.replace(".", "_") == name]
    candidates = exact or [p for p in paths if p.rsplit(".", 1)[-1] == name]
    if len(candidates) > 1:
        raise HydraSweepError(
            f"keyfield {name!r} of table {table!r} matches several keys of the Hydra config {candidates}; "
            f"sweep the one meant ({candidates[0]}=...) so that it maps onto the keyfield"
        )
    return candidates[0] if candidates else None


def job_keyfields(overrides: Sequence[str], cfg: Any, choices: Mapping[str, Any], keyfields: Sequence[str],
                  table: str) -> dict[str, Any]:
    """The keyfield values of one job, read from its composed config ``cfg``."""
    paths: dict[str, str] = {}
    for override in overrides:
        key = _override_key(override)
        name = keyfield_for(key, keyfields)
        if name is not None and (name not in paths or key.replace(".", "_") == name):
            paths[name] = key
    missing = [name for name in keyfields if name not in paths]
    config_paths = _config_paths(cfg, choices) if missing else []
    for name in missing:
        path = _path_for(name, config_paths, keyfields, table)
        if path is not None:
            paths[name] = path
    row = {}
    for name in keyfields:
        found, value = (False, None) if name not in paths else _value_at(cfg, choices, paths[name])
        if not found:
            raise HydraSweepError(
                f"keyfield {name!r} of table {table!r} has no value in the job's config ({' '.join(overrides)}): "
                f"sweep it ({name}=...) or add {name} to the Hydra config; the keyfields are {list(keyfields)}"
            )
        row[name] = value
    return row


def check_swept(jobs: Sequence[Sequence[str]], keyfields: Sequence[str], table: str) -> None:
    """:class:`HydraSweepError` when a swept parameter maps to no keyfield."""
    unmapped = [key for key in swept_keys(jobs) if keyfield_for(key, keyfields) is None]
    if unmapped:
        raise HydraSweepError(
            f"swept parameters {unmapped} map to no keyfield of table {table!r}; the keyfields are "
            f"{list(keyfields)} (the override a.b.c maps to keyfield a_b_c, else c): add them as keyfields "
            "to the experiment file or stop sweeping them"
        )


def fast_rows(jobs: Sequence[Sequence[str]], keyfields: Sequence[str], base_cfg: Any,
              base_choices: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The keyfield values of every job read from its overrides (Hydra's override parser) and,
    for keyfields a job does not override, from the sweep's base config, without composing each
    job (Hydra takes ~0.2 s per composition). None when a value could depend on the composition
    (an interpolation, a config group chosen by the job, a deleted key): compose each job then."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    groups = {str(g).replace("/", ".") for g in base_choices}
    base: dict[str, Any] = {}
    rows = []
    for overrides in jobs:
        row: dict[str, Any] = {}
        chooses_group = False
        for override in parser.parse_overrides(list(overrides)):
            key = override.key_or_group
            if override.is_delete() or override.package is not None:
                return None
            chooses_group = chooses_group or key in groups
            name = keyfield_for(key, keyfields)
            if name is None or (name in row and key.replace(".", "_") != name):
                continue
            value = override.value()
            if isinstance(value, str) and "${" in value:
                return None
            row[name] = value
        for name in keyfields:
            if name in row:
                continue
            if chooses_group:
                return None
            if name not in base:
                path = _path_for(name, _config_paths(base_cfg, base_choices), keyfields, "")
                parent, _, leaf = (path or "").rpartition(".")
                node = OmegaConf.select(base_cfg, parent) if parent else base_cfg
                if path is None or (path not in groups and OmegaConf.is_interpolation(node, leaf)):
                    return None
                base[name] = _value_at(base_cfg, base_choices, path)[1]
            row[name] = base[name]
        rows.append(row)
    return rows


def record_sweep(db: Database, jobs: Sequence[Sequence[str]], compose: Callable[[Sequence[str]], tuple[Any, Any]],
                 *, config_source: str, config_name: str | None, version_base: str | None, task_function: str,
                 base: tuple[Any, Any] | None = None, run_dirs: Sequence[str | None] | None = None) -> SweepReport:
    """Add one row per job of a sweep (none twice) and its side-table entry.

    :param jobs: each job's overrides, as Hydra's sweeper gives them to the launcher.
    :param compose: a job's overrides → (its composed config, ``hydra.runtime.choices``).
    :param base: the sweep's config and its choices, for :func:`fast_rows`.
    :raises HydraSweepError: a swept key maps to no keyfield, or a keyfield has no value.
    :raises FillError / InvalidValueError: a value its keyfield column cannot hold (nothing added).
    """
    spec = db.schema.spec
    names = [k.name for k in spec.keyfields]
    check_swept(jobs, names, spec.name)
    rows = None if base is None else fast_rows(jobs, names, base[0], base[1] or {})
    if rows is None:
        rows = []
        for overrides in jobs:
            cfg, choices = compose(overrides)
            rows.append(job_keyfields(overrides, cfg, choices or {}, names, spec.name))
    side = hydra_table(db)
    added = fill_rows(db, rows)
    canonicalizer = RowCanonicalizer(spec.keyfields, db.backend)
    hashes = [canonicalizer.keyhash(canonicalizer.normalize(row)) for row in rows]
    main = db.schema.main
    with db.begin() as conn:
        ids = dict(conn.execute(sa.select(main.c.keyhash, main.c.ID).where(main.c.keyhash.in_(set(hashes)))).all())
        found = conn.execute(sa.select(side.c.experiment_id, side.c.overrides, side.c.keyhash)
                             .where(side.c.experiment_id.in_(set(ids.values())))).all()
        stale = [r.experiment_id for r in found if ids.get(r.keyhash) != r.experiment_id]
        if stale:
            conn.execute(sa.delete(side).where(side.c.experiment_id.in_(stale)))
    have = {r.experiment_id: r.overrides for r in found if r.experiment_id not in stale}
    entries = {}
    changed = set()
    for index, (overrides, key) in enumerate(zip(jobs, hashes, strict=True)):
        experiment_id = int(ids[key])
        if experiment_id in have:
            if sorted(json.loads(have[experiment_id])) != sorted(overrides):
                changed.add(experiment_id)
            continue
        if experiment_id in entries:
            continue
        entries[experiment_id] = {
            "experiment_id": experiment_id, "keyhash": key, "overrides": json.dumps(list(overrides)),
            "config_source": config_source,
            "config_name": config_name, "version_base": version_base, "task_function": task_function,
            "run_dir": run_dirs[index] if run_dirs else None,
        }
    _insert_missing(db, side, list(entries.values()))
    return SweepReport(added=added, existing=len(set(hashes)) - added,
                       experiment_ids=tuple(int(ids[key]) for key in hashes), changed=len(changed),
                       unconfigured=unconfigured_values(spec.keyfields, rows, db.backend))


def _insert_missing(db: Database, side: sa.Table, entries: list[dict[str, Any]]) -> None:
    """Insert side-table entries; one a concurrent sweep wrote first is kept (one at a time then)."""
    if not entries:
        return
    try:
        with db.begin() as conn:
            conn.execute(side.insert(), entries)
    except sa.exc.IntegrityError:
        for entry in entries:
            try:
                with db.begin() as conn:
                    conn.execute(side.insert(), entry)
            except sa.exc.IntegrityError:
                continue


def lookup_job(db: Database, experiment_id: int) -> HydraJob | None:
    """The side-table entry of experiment ``experiment_id``; None when a sweep did not add it
    (or the entry belongs to an earlier row of that ID, of a table dropped since)."""
    side, main = hydra_table(db), db.schema.main
    with db.begin() as conn:
        row = conn.execute(sa.select(side).join(main, main.c.ID == side.c.experiment_id)
                           .where(side.c.experiment_id == experiment_id, main.c.keyhash == side.c.keyhash)).first()
    if row is None:
        return None
    return HydraJob(
        experiment_id=int(row.experiment_id), overrides=tuple(json.loads(row.overrides)),
        config_source=row.config_source, config_name=row.config_name, version_base=row.version_base,
        task_function=row.task_function, run_dir=row.run_dir,
    )
