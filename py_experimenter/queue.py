"""The experiment table as a queue: fill, claim, fenced writes, finish, reset.

This module decides *which* transition happens; the SQL that differs per backend lives in
:mod:`py_experimenter.db.dialects`. Hot-path statements are built once per queue and run
with bound parameters on one persistent connection per process.

Fencing: every write of a running experiment carries ``ID = :id AND attempt = :attempt AND
status = 'running'``. When that matches no row the attempt was taken over, and the write
raises :class:`~py_experimenter.exceptions.LeaseLostError` instead of overwriting anything.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from py_experimenter.db.database import Database
from py_experimenter.db.engine import DriverStatement
from py_experimenter.exceptions import LeaseLostError
from py_experimenter.status import ExperimentStatus
from py_experimenter.values import DRIVER_REFUSALS, refused_by_driver

T = TypeVar("T")
RUNNING = ExperimentStatus.RUNNING.value
CREATED = ExperimentStatus.CREATED.value


@dataclass(frozen=True)
class WorkerIdentity:
    """Who claims: recorded on the row and in the attempts table."""

    name: str = "PyExperimenter"
    machine: str = field(default_factory=socket.gethostname)
    job_id: str | None = field(default_factory=lambda: slurm_job_id())

    @property
    def worker(self) -> str:
        return f"{self.machine}:{os.getpid()}"


def slurm_job_id() -> str | None:
    """``<job>`` or ``<array job>_<task>`` inside a Slurm job, else None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


@dataclass(frozen=True)
class AttemptReport:
    """What the attempts table records about one try, where known: CPU seconds, peak memory
    (MiB), wall-clock seconds, and for containers the image ID and the limits applied (JSON)."""

    cpu_seconds: float | None = None
    max_rss_mb: float | None = None
    duration_seconds: float | None = None
    image: str | None = None
    limits: str | None = None

    def params(self) -> dict[str, Any]:
        return {"cpu": self.cpu_seconds, "rss": self.max_rss_mb, "duration": self.duration_seconds,
                "image": self.image, "limits": self.limits}


@dataclass(frozen=True)
class Experiment:
    """A claimed experiment: its row ID, the attempt this executor owns, and its keyfields.

    ``cancel_requested``: the row was flagged before it was claimed; the executor ends the
    attempt as ``cancelled`` without running it.
    """

    id: int
    attempt: int
    keyfields: dict[str, Any]
    cancel_requested: bool = False


class ExperimentQueue:
    """Transitions of experiment rows, safe with any number of executors at once."""

    def __init__(self, db: Database, identity: WorkerIdentity | None = None, *, lease_seconds: float = 120.0):
        self.db = db
        self.identity = identity or WorkerIdentity()
        self.lease_seconds = lease_seconds
        self._conn: Connection | None = None
        self._conn_pid: int | None = None
        self._statements = _Statements(db)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_conn=None, _conn_pid=None)
        return state

    # -- connections -------------------------------------------------------------------

    @property
    def conn(self) -> Connection:
        """This process's persistent connection for the hot path."""
        if self._conn is None or self._conn_pid != os.getpid() or self._conn.invalidated:
            self._conn = self.db.connect()
            self._conn_pid = os.getpid()
        return self._conn

    def close(self) -> None:
        """Return the persistent connection to the pool."""
        if self._conn is not None and self._conn_pid == os.getpid():
            self._conn.close()
        self._conn = None

    def _run(self, action: Callable[[], T]) -> T:
        """Run one transaction, retrying deadlocks and riding out database outages."""
        return self.db.run(action, on_disconnect=self._drop_connection)

    def _drop_connection(self) -> None:
        """Forget the persistent connection after a disconnect (the next use reconnects)."""
        conn, self._conn = self._conn, None
        if conn is not None and self._conn_pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.invalidate()

    # -- claims ------------------------------------------------------------------------

    def claim(self, *, random_order: bool = False) -> Experiment | None:
        """Claim the next ``created`` experiment, or None when none is left to claim."""
        return self._run(lambda: self._claim_once(random_order))

    def _claim_once(self, random_order: bool) -> Experiment | None:
        st = self._statements
        conn = self.conn
        with conn.begin():
            if st.claim_returning is not None and not random_order:
                row = conn.execute(st.claim_returning, self._claim_params()).first()
            else:
                picked = self._pick_random(conn) if random_order else conn.execute(st.pick).first()
                if picked is None:
                    return None
                row = picked if st.claim_by_id.execute(
                    conn, {**self._claim_params(), "eid": picked.ID, "from_status": CREATED}
                ).rowcount == 1 else None
            if row is None:
                return None
            return self._open_attempt(conn, row)

    def _pick_random(self, conn: Connection) -> Any:
        """A random claimable row, locked (see :meth:`Dialect.pick_random_candidates`)."""
        st = self._statements
        if st.pick_candidates is None:
            return conn.execute(st.pick_random).first()
        for _ in range(3):
            candidates = list(conn.scalars(st.pick_candidates))
            if not candidates:
                return None
            row = conn.execute(st.pick_among, {"candidates": candidates}).first()
            if row is not None:
                return row
        # Other executors hold every candidate seen: take the next free row in order instead.
        return conn.execute(st.pick).first()

    def claim_id(self, experiment_id: int, from_status: ExperimentStatus) -> Experiment | None:
        """Claim one given experiment if it is in ``from_status``; None otherwise."""
        return self._run(lambda: self._claim_id_once(experiment_id, from_status))

    def _claim_id_once(self, experiment_id: int, from_status: ExperimentStatus) -> Experiment | None:
        st = self._statements
        conn = self.conn
        with conn.begin():
            row = conn.execute(st.select_by_id, {"eid": experiment_id}).first()
            if row is None or row.status != from_status.value:
                return None
            params = {**self._claim_params(), "eid": experiment_id, "from_status": from_status.value}
            if st.claim_by_id.execute(conn, params).rowcount != 1:
                return None
            return self._open_attempt(conn, row)

    def _claim_params(self) -> dict[str, Any]:
        ident = self.identity
        return {
            "worker": ident.worker,
            "machine": ident.machine,
            "name": ident.name,
            "job_id": ident.job_id,
            "lease": self.db.dialect.seconds_param(self.lease_seconds),
        }

    def _open_attempt(self, conn: Connection, row: Any) -> Experiment:
        attempt = row.attempt + 1
        ident = self.identity
        self._statements.insert_attempt.execute(
            conn,
            {"eid": row.ID, "att": attempt, "worker": ident.worker, "machine": ident.machine,
             "job_id": ident.job_id},
        )
        names = self.db.schema.spec.keyfield_names
        return Experiment(row.ID, attempt, {name: getattr(row, name) for name in names},
                          cancel_requested=bool(row.cancel_requested))

    # -- fenced writes -----------------------------------------------------------------

    def write_results(self, experiment: Experiment, values: Mapping[str, Any]) -> None:
        """Write resultfields (and their timestamps) of a running experiment, fenced."""
        if not values:
            return
        stmt = self._statements.results_update(frozenset(values))

        def once() -> None:
            conn = self.conn
            with conn.begin():
                if conn.execute(stmt, {**values, **_fence(experiment)}).rowcount != 1:
                    raise self._lease_lost(experiment, "results")

        try:
            self._run(once)
        except DRIVER_REFUSALS as err:
            raise refused_by_driver(f"process_results (experiment {experiment.id})", err) from None

    def write_logs(self, experiment: Experiment, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        """Append rows to logtables for a running experiment, fenced (all or nothing)."""
        st = self._statements

        def once() -> None:
            conn = self.conn
            with conn.begin():
                if conn.execute(st.lock_running, _fence(experiment)).first() is None:
                    raise self._lease_lost(experiment, "logs")
                for logtable, entries in rows.items():
                    params = [{**entry, "experiment_id": experiment.id, "attempt": experiment.attempt}
                              for entry in entries]
                    conn.execute(st.log_insert(logtable, frozenset(entries[0])), params)

        try:
            self._run(once)
        except DRIVER_REFUSALS as err:
            raise refused_by_driver(f"process_logs (experiment {experiment.id})", err) from None

    def finish(
        self,
        experiment: Experiment,
        status: ExperimentStatus,
        *,
        outcome: str | None = None,
        error: str | None = None,
        report: AttemptReport | None = None,
    ) -> None:
        """Close the attempt (with its :class:`AttemptReport`) and set the row's final status, fenced.

        Safe to retry after a dropped connection: when the first try committed but its reply
        was lost, the retry finds the row already finished by this attempt and succeeds.
        """
        st = self._statements
        close_params = {"eid": experiment.id, "att": experiment.attempt, "outcome": outcome or status.value,
                        "error": error, **(report or AttemptReport()).params()}
        tries = 0

        def once() -> None:
            nonlocal tries
            tries += 1
            conn = self.conn
            with conn.begin():
                # Lock order: the main row first, then its attempt row (reset and recovery do the same).
                result = st.finish.execute(conn, {**_fence(experiment), "new_status": status.value, "error": error})
                if result.rowcount != 1:
                    if tries > 1 and self._finished_by(conn, experiment, status):
                        return
                    raise self._lease_lost(experiment, "status")
                st.close_attempt.execute(conn, close_params)

        self._run(once)

    def _finished_by(self, conn: Connection, experiment: Experiment, status: ExperimentStatus) -> bool:
        row = conn.execute(self._statements.select_by_id, {"eid": experiment.id}).first()
        return row is not None and row.attempt == experiment.attempt and row.status == status.value

    def current_attempt(self, experiment_id: int) -> Experiment | None:
        """The running attempt of ``experiment_id`` (for ``attach``), or None if not running."""

        def once() -> Any:
            with self.db.begin() as conn:
                return conn.execute(self._statements.select_by_id, {"eid": experiment_id}).first()

        row = self._run(once)
        if row is None or row.status != RUNNING:
            return None
        names = self.db.schema.spec.keyfield_names
        return Experiment(row.ID, row.attempt, {name: getattr(row, name) for name in names})

    def _lease_lost(self, experiment: Experiment, what: str) -> LeaseLostError:
        return LeaseLostError(
            f"experiment {experiment.id} attempt {experiment.attempt}: {what} not written, this "
            "executor no longer owns it (its lease expired, or it was reset or taken over)"
        )


def _fence(experiment: Experiment) -> dict[str, Any]:
    return {"eid": experiment.id, "att": experiment.attempt}


class _Statements:
    """Hot-path statements, built once per queue with bound parameters."""

    def __init__(self, db: Database):
        d, main, attempts = db.dialect, db.schema.main, db.schema.attempts
        self._db = db
        bp = sa.bindparam
        pick_columns = [main.c.ID, main.c.attempt, main.c.cancel_requested,
                        *(main.c[k] for k in db.schema.spec.keyfield_names)]
        self.pick = d.pick_created(main, pick_columns, random_order=False)
        self.pick_random = d.pick_created(main, pick_columns, random_order=True)
        self.pick_candidates = d.pick_random_candidates(main) if d.random_candidates else None
        self.pick_among = d.pick_among(main, pick_columns)
        self.select_by_id = sa.select(*pick_columns, main.c.status).where(main.c.ID == bp("eid"))
        claim_values = dict(
            status=RUNNING, attempt=main.c.attempt + 1, start_date=d.now(), worker=bp("worker"),
            machine=bp("machine"), name=bp("name"), job_id=bp("job_id"), lease_until=d.now_plus("lease"),
            heartbeat_at=d.now(), end_date=sa.null(), error=sa.null(),
        )
        self.claim_by_id = DriverStatement(
            sa.update(main).where(main.c.ID == bp("eid"), main.c.status == bp("from_status")).values(**claim_values)
        )
        self.claim_returning: sa.Update | None = None
        if db.backend == "postgresql":
            next_id = self.pick.with_only_columns(main.c.ID).scalar_subquery()
            self.claim_returning = (
                sa.update(main).where(main.c.ID == next_id).values(**claim_values)
                .returning(main.c.ID, (main.c.attempt - 1).label("attempt"), main.c.cancel_requested,
                           *(main.c[k] for k in db.schema.spec.keyfield_names))
            )
        self.insert_attempt = DriverStatement(sa.insert(attempts).values(
            experiment_id=bp("eid"), attempt=bp("att"), worker=bp("worker"), machine=bp("machine"),
            job_id=bp("job_id"), started_at=d.now(),
        ))
        self.fence = sa.and_(main.c.ID == bp("eid"), main.c.attempt == bp("att"), main.c.status == RUNNING)
        self.lock_running = sa.select(main.c.ID).where(self.fence)
        if d.skip_locked:
            self.lock_running = self.lock_running.with_for_update()
        self.finish = DriverStatement(sa.update(main).where(self.fence).values(
            status=bp("new_status"), end_date=d.now(), error=bp("error"), lease_until=sa.null(),
            cancel_requested=False,
        ))
        self.close_attempt = DriverStatement(
            sa.update(attempts)
            .where(attempts.c.experiment_id == bp("eid"), attempts.c.attempt == bp("att"))
            .values(ended_at=d.now(), outcome=bp("outcome"), error=bp("error"), cpu_seconds=bp("cpu"),
                    max_rss_mb=bp("rss"), duration_seconds=bp("duration"), image=bp("image"),
                    limits=bp("limits"))
        )
        self._results: dict[frozenset[str], sa.Update] = {}
        self._logs: dict[tuple[str, frozenset[str]], sa.Insert] = {}

    def results_update(self, fields: frozenset[str]) -> sa.Update:
        stmt = self._results.get(fields)
        if stmt is None:
            main, spec = self._db.schema.main, self._db.schema.spec
            values: dict[str, Any] = {name: sa.bindparam(name) for name in fields}
            if spec.result_timestamps:
                values.update({f"{name}_timestamp": self._db.dialect.now() for name in fields})
            stmt = sa.update(main).where(self.fence).values(**values)
            self._results[fields] = stmt
        return stmt

    def log_insert(self, logtable: str, fields: frozenset[str]) -> sa.Insert:
        key = (logtable, fields)
        stmt = self._logs.get(key)
        if stmt is None:
            table = self._db.schema.logtables[logtable]
            stmt = sa.insert(table).values(
                timestamp=self._db.dialect.now(),
                **{name: sa.bindparam(name) for name in (*fields, "experiment_id", "attempt")},
            )
            self._logs[key] = stmt
        return stmt
