"""Benchmarks of py_experimenter against raw driver loops. Prints figures; asserts nothing.

1. No-op experiments per second through ``PyExperimenter.execute`` (1, 2, 4 executor
   processes) next to a raw loop of the same claim and finish statements on persistent
   driver connections (PyMySQL / sqlite3 / psycopg).
2. Claim latency of ``ExperimentQueue.claim()`` on a small and a large mostly-``created``
   table, and the ``EXPLAIN`` of the claim query on each backend.
3. Filling a large grid with ``fill_table_from_config()`` vs a raw ``executemany``.
4. The failure path (``--sections failure``, ~6.5 minutes, not in the default run; see
   ``bench_failure.py``): heartbeat cost, reclaim delay after ``kill -9`` with the default
   lease / heartbeat, no-op throughput with heartbeats on vs off.

Every table is a fresh uuid-named ``bench_*`` table built by our schema (same indexes),
dropped at the end. Run through ``scripts/bench`` (``--help`` lists the options).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from bench_failure import FailureResults, report_failure, run_failure, settings

from py_experimenter.experimenter import PyExperimenter
from py_experimenter.queue import ExperimentQueue, WorkerIdentity

URLS = {
    "mysql": os.environ.get(
        "PY_EXPERIMENTER_TEST_MYSQL_URL", "mysql+pymysql://pyexp:pyexp-test@127.0.0.1:3306/py_experimenter_test"
    ),
    "postgresql": os.environ.get(
        "PY_EXPERIMENTER_TEST_POSTGRES_URL",
        "postgresql+psycopg://pyexp:pyexp-test@127.0.0.1:5432/py_experimenter_test",
    ),
}
BACKENDS = ("mysql", "sqlite", "postgresql")
SECTIONS = ("throughput", "latency", "fill", "failure")
DEFAULT_SECTIONS = ("throughput", "latency", "fill")
JOBS = (1, 2, 4)
RAW_BATCH = 5000
LEASE_US = 120_000_000
FORK = multiprocessing.get_context("fork")


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- tables ------------------------------------------------------------------------------


def int_range(stop: int) -> dict[str, Any]:
    return {"type": "INT", "values": {"start": 0, "stop": stop}}


def grid_keyfields(rows: int) -> dict[str, Any]:
    """x, y, z with 100 × 100 × rows/10,000 values (rows a multiple of 10,000)."""
    assert rows % 10_000 == 0, rows
    return {"x": int_range(100), "y": int_range(100), "z": int_range(rows // 10_000)}


@dataclass
class Tables:
    """Creates bench_* tables through PyExperimenter and drops every one of them at the end."""

    workdir: Path
    created: list[PyExperimenter] = field(default_factory=list)

    def url(self, backend: str, name: str) -> str:
        return f"sqlite:///{self.workdir / name}.db" if backend == "sqlite" else URLS[backend]

    def new(self, backend: str, keyfields: dict[str, Any]) -> PyExperimenter:
        name = f"bench_{uuid.uuid4().hex[:12]}"
        credentials = self.workdir / f"{name}.credentials.yml"
        credentials.write_text(yaml.safe_dump({"CREDENTIALS": {"Database": {"url": self.url(backend, name)}}}))
        config = self.workdir / f"{name}.yml"
        database = {"provider": backend, "database": "py_experimenter_test",
                    "table": {"name": name, "keyfields": keyfields, "resultfields": {}}}
        config.write_text(yaml.safe_dump({"PY_EXPERIMENTER": {"n_jobs": 1, "Database": database}}, sort_keys=False))
        experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
        self.created.append(experimenter)
        experimenter.create_table()
        return experimenter

    def drop(self, experimenter: PyExperimenter) -> None:
        experimenter.delete_table()
        experimenter.db.dispose()
        self.created.remove(experimenter)
        if experimenter.db.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{experimenter.db.url.database}{suffix}").unlink(missing_ok=True)

    def drop_all(self) -> None:
        for experimenter in list(self.created):
            try:
                self.drop(experimenter)
            except Exception as err:  # keep dropping the others
                print(f"could not drop {experimenter.config.table.name}: {err}", file=sys.stderr)


# -- raw driver connections ----------------------------------------------------------------


def raw_connect(experimenter: PyExperimenter) -> Any:
    """A plain DB-API connection to the experimenter's database, set up like our engine's."""
    url = experimenter.db.url
    backend = experimenter.db.backend
    if backend == "sqlite":
        conn = sqlite3.connect(url.database, timeout=60, isolation_level=None)
        for pragma in ("journal_mode=WAL", "busy_timeout=60000", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        return conn
    if backend == "mysql":
        import pymysql

        return pymysql.connect(
            host=url.host, port=url.port or 3306, user=url.username, password=url.password,
            database=url.database, autocommit=False, init_command="SET time_zone = '+00:00'",
        )
    import psycopg

    return psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        dbname=url.database, options="-c timezone=UTC",
    )


def raw_claim_loop(experimenter: PyExperimenter) -> int:
    """Claim and finish rows with the bare claim / finish statements until none is left."""
    backend, t = experimenter.db.backend, experimenter.config.table.name
    conn = raw_connect(experimenter)
    worker = (f"raw:{os.getpid()}", "bench-host", "bench")
    done = 0
    if backend == "mysql":
        cur = conn.cursor()
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        pick = (f"SELECT ID, attempt FROM `{t}` WHERE status='created' ORDER BY priority, ID "
                "LIMIT 1 FOR UPDATE SKIP LOCKED")
        claim = (f"UPDATE `{t}` SET status='running', attempt=attempt+1, start_date=NOW(6), worker=%s, "
                 "machine=%s, name=%s, lease_until=TIMESTAMPADD(MICROSECOND, %s, NOW(6)), "
                 "heartbeat_at=NOW(6) WHERE ID=%s")
        finish = (f"UPDATE `{t}` SET status='done', end_date=NOW(6), lease_until=NULL "
                  "WHERE ID=%s AND attempt=%s AND status='running'")
        while True:
            cur.execute("START TRANSACTION")
            cur.execute(pick)
            row = cur.fetchone()
            if row is None:
                conn.commit()
                break
            cur.execute(claim, (*worker, LEASE_US, row[0]))
            conn.commit()
            cur.execute(finish, (row[0], row[1] + 1))
            conn.commit()
            done += 1
    elif backend == "sqlite":
        now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
        pick = f'SELECT ID, attempt FROM "{t}" WHERE status=\'created\' ORDER BY priority, ID LIMIT 1'
        claim = (f"UPDATE \"{t}\" SET status='running', attempt=attempt+1, start_date={now}, worker=?, "
                 f"machine=?, name=?, lease_until=strftime('%Y-%m-%d %H:%M:%f', 'now', ?), "
                 f"heartbeat_at={now} WHERE ID=?")
        finish = (f"UPDATE \"{t}\" SET status='done', end_date={now}, lease_until=NULL "
                  "WHERE ID=? AND attempt=? AND status='running'")
        while True:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(pick).fetchone()
            if row is None:
                conn.execute("COMMIT")
                break
            conn.execute(claim, (*worker, "+120 seconds", row[0]))
            conn.execute("COMMIT")
            conn.execute(finish, (row[0], row[1] + 1))
            done += 1
    else:
        claim = (f"UPDATE \"{t}\" SET status='running', attempt=attempt+1, start_date=LOCALTIMESTAMP, "
                 "worker=%s, machine=%s, name=%s, lease_until=LOCALTIMESTAMP + %s, "
                 f"heartbeat_at=LOCALTIMESTAMP WHERE \"ID\" = (SELECT \"ID\" FROM \"{t}\" "
                 "WHERE status='created' ORDER BY priority, \"ID\" LIMIT 1 FOR UPDATE SKIP LOCKED) "
                 "RETURNING \"ID\", attempt")
        finish = (f"UPDATE \"{t}\" SET status='done', end_date=LOCALTIMESTAMP, lease_until=NULL "
                  "WHERE \"ID\"=%s AND attempt=%s AND status='running'")
        lease = dt.timedelta(seconds=120)
        with conn.cursor() as cur:
            while True:
                cur.execute(claim, (*worker, lease))
                row = cur.fetchone()
                conn.commit()
                if row is None:
                    break
                cur.execute(finish, row)
                conn.commit()
                done += 1
    conn.close()
    return done


def _raw_child(experimenter: PyExperimenter, counter: Any) -> None:
    ran = raw_claim_loop(experimenter)
    with counter.get_lock():
        counter.value += ran


def run_raw(experimenter: PyExperimenter, jobs: int) -> int:
    """The raw loop in ``jobs`` processes (in this process for one), like ``execute`` does."""
    experimenter.db.dispose()
    if jobs == 1:
        return raw_claim_loop(experimenter)
    counter = FORK.Value("l", 0)
    processes = [FORK.Process(target=_raw_child, args=(experimenter, counter)) for _ in range(jobs)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    if any(p.exitcode != 0 for p in processes):
        raise RuntimeError("a raw claim process failed")
    return int(counter.value)


# -- 1. throughput ----------------------------------------------------------------------------


def noop(keyfields: dict[str, Any], result_processor: Any, custom: dict[str, Any]) -> None:
    return None


def throughput(tables: Tables, backend: str, jobs: int, rows: int, repeat: int) -> tuple[float, float]:
    """(ours, raw) no-op experiments per second, the best of ``repeat`` runs, each on a fresh table."""
    best = [0.0, 0.0]
    for _ in range(repeat):
        for i, runner in enumerate((lambda e: e.execute(noop, n_jobs=jobs), lambda e: run_raw(e, jobs))):
            experimenter = tables.new(backend, {"i": int_range(rows)})
            experimenter.fill_table_from_config()
            experimenter.db.dispose()
            start = time.perf_counter()
            ran = runner(experimenter)
            elapsed = time.perf_counter() - start
            if ran != rows:
                raise RuntimeError(f"{backend}: ran {ran} of {rows} experiments")
            best[i] = max(best[i], rows / elapsed)
            tables.drop(experimenter)
    return best[0], best[1]


# -- 2. claim latency -------------------------------------------------------------------------


def claim_latencies(experimenter: PyExperimenter, claims: int, warmup: int = 20) -> list[float]:
    """Seconds per ``ExperimentQueue.claim()``, one process, persistent connection."""
    queue = ExperimentQueue(experimenter.db, WorkerIdentity(name="bench"))
    try:
        for _ in range(warmup):
            queue.claim()
        times = []
        for _ in range(claims):
            start = time.perf_counter()
            experiment = queue.claim()
            times.append(time.perf_counter() - start)
            if experiment is None:
                raise RuntimeError("the table ran out of rows to claim")
        return times
    finally:
        queue.close()


def explain_claim(experimenter: PyExperimenter) -> tuple[list[str], str]:
    """The EXPLAIN of the statement ``claim()`` picks its row with, and a one-line verdict."""
    db = experimenter.db
    statements = ExperimentQueue(db)._statements
    index = f"ix_{experimenter.config.table.name}_claim"
    if db.backend == "postgresql":
        stmt: Any = statements.claim_returning
        params = {"worker": "w", "machine": "m", "name": "n", "job_id": None,
                  "lease": db.dialect.seconds_param(120)}
    else:
        stmt, params = statements.pick, {}
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "mysql": "EXPLAIN ", "postgresql": "EXPLAIN "}[db.backend]
    with db.connect() as conn:
        compiled = stmt.compile(dialect=conn.dialect)
        bound = compiled.construct_params(params)
        args: Any = tuple(bound[k] for k in compiled.positiontup) if compiled.positional else bound
        result = conn.exec_driver_sql(prefix + compiled.string, args)
        keys, rows = list(result.keys()), [tuple(r) for r in result]
        conn.rollback()
    if db.backend == "mysql":
        lines = [" | ".join(keys), *(" | ".join(str(v) for v in r) for r in rows)]
        row = dict(zip(keys, rows[0], strict=True))
        ok = row["key"] == index and "filesort" not in str(row["Extra"]) and "temporary" not in str(row["Extra"])
        detail = f"type={row['type']} key={row['key']} Extra={row['Extra']}"
    elif db.backend == "sqlite":
        lines = [str(r[-1]) for r in rows]
        text = " / ".join(lines)
        ok = f"USING INDEX {index}" in text and "TEMP B-TREE" not in text
        detail = text
    else:
        lines = [str(r[0]) for r in rows]
        text = "\n".join(lines)
        ok = f"Index Scan using {index}" in text and "Sort" not in text
        detail = "index scan on the claim index" if ok else "see plan"
    verdict = ("OK (claim index, no sort): " if ok else "CHECK (not a plain scan of the claim index): ") + detail
    return lines, verdict


# -- 3. fill ------------------------------------------------------------------------------------


def raw_fill_rows(rows: int) -> list[tuple[Any, ...]]:
    """The grid's rows as insert tuples with the same keyhash our fill computes."""
    creation = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    out = []
    for x, y, z in itertools.product(range(100), range(100), range(rows // 10_000)):
        payload = json.dumps([x, y, z], separators=(",", ":"))
        out.append((x, y, z, creation, "created", hashlib.sha256(payload.encode()).hexdigest()[:32]))
    return out


def raw_fill(experimenter: PyExperimenter, data: list[tuple[Any, ...]]) -> float:
    """Seconds to insert ``data`` with the driver's executemany, one commit per batch."""
    backend, t = experimenter.db.backend, experimenter.config.table.name
    experimenter.db.dispose()
    conn = raw_connect(experimenter)
    columns = ("x", "y", "z", "creation_date", "status", "keyhash")
    mark = "?" if backend == "sqlite" else "%s"
    quote = "`" if backend == "mysql" else '"'
    sql = (f"INSERT INTO {quote}{t}{quote} ({', '.join(columns)}) "
           f"VALUES ({', '.join([mark] * len(columns))})")
    batches = [data[i:i + RAW_BATCH] for i in range(0, len(data), RAW_BATCH)]
    start = time.perf_counter()
    if backend == "sqlite":
        for batch in batches:
            conn.execute("BEGIN")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
    else:
        cur = conn.cursor()
        for batch in batches:
            cur.executemany(sql, batch)
            conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Results:
    throughput: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    latency: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    explain: dict[str, tuple[list[str], str]] = field(default_factory=dict)
    fill: dict[str, tuple[float, float]] = field(default_factory=dict)
    failure: FailureResults = field(default_factory=FailureResults)


def timed(what: str, action: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = action()
    log(f"{what}: {time.perf_counter() - start:.1f} s")
    return result


def run(args: argparse.Namespace, tables: Tables, results: Results) -> None:
    sections = set(args.sections)
    if "throughput" in sections:
        for backend in args.backends:
            for jobs in JOBS:
                ours, raw = timed(f"throughput {backend} x{jobs}",
                                  lambda b=backend, j=jobs: throughput(tables, b, j, args.exp_rows, args.repeat))
                results.throughput[backend, jobs] = (ours, raw)
    if sections & {"latency", "fill"}:
        big_data = raw_fill_rows(args.big_rows) if "fill" in sections else []
        for backend in args.backends:
            if "latency" in sections:
                small = tables.new(backend, grid_keyfields(args.small_rows))
                timed(f"fill {args.small_rows:,} on {backend}", small.fill_table_from_config)
                results.latency[backend, args.small_rows] = summarize(claim_latencies(small, args.claims))
                tables.drop(small)
            big = tables.new(backend, grid_keyfields(args.big_rows))
            start = time.perf_counter()
            big.fill_table_from_config()
            ours_fill = time.perf_counter() - start
            log(f"fill {args.big_rows:,} on {backend} (ours): {ours_fill:.1f} s")
            if "latency" in sections:
                results.explain[backend] = explain_claim(big)
                results.latency[backend, args.big_rows] = summarize(claim_latencies(big, args.claims))
            tables.drop(big)
            if "fill" in sections:
                equivalent = tables.new(backend, grid_keyfields(args.big_rows))
                raw_seconds = raw_fill(equivalent, big_data)
                log(f"fill {args.big_rows:,} on {backend} (raw): {raw_seconds:.1f} s")
                tables.drop(equivalent)
                results.fill[backend] = (ours_fill, raw_seconds)
    if "failure" in sections:
        run_failure(tables, args.backends, settings(args.quick, args.exp_rows, args.repeat), results.failure, log)


def summarize(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def report(args: argparse.Namespace, results: Results) -> None:
    out: list[str] = []
    if results.throughput:
        best = f", best of {args.repeat}" if args.repeat > 1 else ""
        out += [f"1. No-op experiments per second ({args.exp_rows:,} rows per run, fresh table each run{best})",
                f"   {'backend':<11}{'jobs':>5}{'ours/s':>10}{'raw/s':>10}{'ours/raw':>10}"]
        for (backend, jobs), (ours, raw) in results.throughput.items():
            out.append(f"   {backend:<11}{jobs:>5}{ours:>10.0f}{raw:>10.0f}{ours / raw:>9.0%}")
        if ("mysql", 4) in results.throughput:
            ours, raw = results.throughput["mysql", 4]
            out.append(f"   target: mysql, 4 jobs, ours/raw >= 40 %: {ours / raw:.0%} "
                       f"{'(met)' if ours / raw >= 0.4 else '(MISSED)'}")
        out.append("")
    if results.latency:
        out += [f"2. ExperimentQueue.claim() latency ({args.claims} claims after 20 warm-up claims, one process)",
                f"   {'backend':<11}{'rows':>11}{'median ms':>11}{'p95 ms':>9}{'vs small':>10}"]
        for (backend, rows), (median, p95) in results.latency.items():
            base = results.latency.get((backend, args.small_rows))
            ratio = f"{median / base[0]:>9.2f}x" if base else ""
            out.append(f"   {backend:<11}{rows:>11,}{median * 1e3:>11.3f}{p95 * 1e3:>9.3f}{ratio}")
        out.append(f"   target: median at {args.big_rows:,} rows within 1.5x of {args.small_rows:,} rows")
        for backend, (lines, verdict) in results.explain.items():
            out.append(f"   EXPLAIN claim on {backend} ({args.big_rows:,} rows): {verdict}")
            out += [f"      {line}" for line in lines]
        out.append("")
    if results.fill:
        out += [f"3. Fill {args.big_rows:,} rows (100 x 100 x {args.big_rows // 10_000}): "
                f"fill_table_from_config() vs raw executemany (batches of {RAW_BATCH:,})",
                f"   {'backend':<11}{'ours s':>9}{'raw s':>9}{'ours/raw':>10}{'ours rows/s':>13}"]
        for backend, (ours, raw) in results.fill.items():
            out.append(f"   {backend:<11}{ours:>9.1f}{raw:>9.1f}{ours / raw:>9.2f}x{args.big_rows / ours:>13,.0f}")
        out.append("   target: ours within 2x of raw")
        out.append("")
    out += report_failure(results.failure)
    print("\n".join(out), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 500 rows per throughput run, 100,000-row fill / latency table")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated subset of {','.join(BACKENDS)} (default: all)")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: {','.join(DEFAULT_SECTIONS)}; "
                             "failure takes ~6.5 minutes, < 1 minute with --quick)")
    parser.add_argument("--exp-rows", type=int, help="rows per throughput run (default 4,000)")
    parser.add_argument("--big-rows", type=int, help="large table, a multiple of 10,000 (default 1,000,000)")
    parser.add_argument("--claims", type=int, default=500, help="timed claims per table (default 500)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each throughput measurement this many times and keep the best (default 1)")
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.sections = [s for s in args.sections.split(",") if s]
    for backend in args.backends:
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    for section in args.sections:
        if section not in SECTIONS:
            parser.error(f"unknown section {section!r}; choose from {', '.join(SECTIONS)}")
    args.exp_rows = args.exp_rows or (500 if args.quick else 4000)
    args.big_rows = args.big_rows or (100_000 if args.quick else 1_000_000)
    args.small_rows = 10_000
    if args.big_rows % 10_000:
        parser.error("--big-rows must be a multiple of 10,000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.pop("PY_EXPERIMENTER_DATABASE_URL", None)  # it would override our bench URLs
    workdir = Path(tempfile.mkdtemp(prefix="py_experimenter_bench_"))
    tables = Tables(workdir)
    results = Results()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        run(args, tables, results)
    except KeyboardInterrupt:
        print("interrupted; partial figures:", file=sys.stderr)
    finally:
        tables.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        print()
        report(args, results)
        print(f"\n(total {time.perf_counter() - started:.0f} s; backends {', '.join(args.backends)}; "
              f"{os.cpu_count()} CPUs; 1-min load average {load_before:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end: other work on the machine skews the figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
