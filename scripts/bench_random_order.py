#!/usr/bin/env python3
"""Random-order claims vs ordered claims at ~5,000 created rows, per backend; prints figures
and each claim's EXPLAIN.

    .venv/bin/python scripts/bench_random_order.py [--rows 5000] [--claims 300] [--backends mysql ...]

``mysql, random (one locking SELECT)`` is the claim before the fix:
``ORDER BY RAND() LIMIT 1 FOR UPDATE SKIP LOCKED`` (it locks every created row it reads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Tables

from py_experimenter.queue import ExperimentQueue, WorkerIdentity


def claim_times(exp: Any, claims: int, *, random_order: bool, one_step: bool = False) -> list[float]:
    if one_step:
        exp.db.dialect.random_candidates = 0  # the statements are built with the queue below
    queue = ExperimentQueue(exp.db, WorkerIdentity())
    times = []
    try:
        for _ in range(claims):
            start = time.perf_counter()
            experiment = queue.claim(random_order=random_order)
            times.append(time.perf_counter() - start)
            assert experiment is not None
    finally:
        queue.close()
        exp.db.dialect.random_candidates = type(exp.db.dialect).random_candidates
    return times


def explain(exp: Any) -> list[str]:
    queue = ExperimentQueue(exp.db, WorkerIdentity())
    st = queue._statements
    out = []
    statements = [("ordered pick", st.pick), ("random pick (one step)", st.pick_random)]
    if st.pick_candidates is not None:
        statements += [("random candidates (no lock)", st.pick_candidates),
                       ("lock one candidate", st.pick_among)]
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "mysql": "EXPLAIN ", "postgresql": "EXPLAIN "}[exp.db.backend]
    with exp.db.engine.connect() as conn:
        dialect = conn.dialect
        for name, stmt in statements:
            if name == "lock one candidate":
                stmt = stmt.params(candidates=[1, 2, 3])
            compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True,
                                                                      "literal_binds": True})
            rows = conn.exec_driver_sql(prefix + str(compiled))
            out.append(f"    {name}:")
            out += ["      " + " | ".join(str(v) for v in row) for row in rows]
        conn.rollback()
    queue.close()
    return out


def noop(keyfields: Any, rp: Any, custom: Any) -> None:
    time.sleep(0.005)


def drain(tables: Tables, backend: str, rows: int, n_jobs: int, *, one_step: bool = False) -> str:
    """Wall time and experiments per process when ``n_jobs`` processes drain ``rows`` in random order."""
    exp = tables.new(backend, {"x": {"type": "INT", "values": {"start": 0, "stop": rows}}})
    exp.fill_table_from_config()
    dialect_class = type(exp.db.dialect)
    saved = dialect_class.random_candidates
    if one_step:
        dialect_class.random_candidates = 0  # inherited by the forked executor processes
    try:
        start = time.perf_counter()
        exp.execute(noop, random_order=True, n_jobs=n_jobs)
        wall = time.perf_counter() - start
    finally:
        dialect_class.random_candidates = saved
    attempts = exp.get_attempts_table()
    per_worker = sorted(attempts.groupby("worker").size().tolist(), reverse=True)
    twice = int(attempts["experiment_id"].duplicated().sum())
    tables.drop(exp)
    return f"{wall:.1f} s, experiments per process {per_worker}, rows run twice: {twice}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "mysql", "postgresql"])
    parser.add_argument("--drain-rows", type=int, default=400, help="rows 4 processes drain in random order")
    args = parser.parse_args()
    keyfields = {"x": {"type": "INT", "values": {"start": 0, "stop": args.rows}}}
    with tempfile.TemporaryDirectory() as workdir:
        tables = Tables(Path(workdir))
        try:
            for backend in args.backends:
                variants: list[tuple[str, dict[str, bool]]] = [("ordered", {"random_order": False}),
                                                               ("random", {"random_order": True})]
                if backend == "mysql":
                    variants.append(("random (one locking SELECT, before the fix)",
                                     {"random_order": True, "one_step": True}))
                for name, kwargs in variants:
                    exp = tables.new(backend, keyfields)
                    exp.fill_table_from_config()
                    if name == "ordered":
                        print(f"{backend}: EXPLAIN at {args.rows} rows", flush=True)
                        print("\n".join(explain(exp)))
                    times = claim_times(exp, args.claims, **kwargs)
                    ms = [t * 1000 for t in times]
                    print(f"{backend:10} {name:45} {args.claims} claims from {args.rows} rows: "
                          f"median {statistics.median(ms):.2f} ms, p90 {statistics.quantiles(ms, n=10)[-1]:.2f} ms",
                          flush=True)
                    with exp.db.begin() as conn:
                        main_table = exp.db.schema.main
                        left = conn.scalar(sa.select(sa.func.count()).select_from(main_table)
                                           .where(main_table.c.status == "created"))
                    assert left == args.rows - args.claims
                    tables.drop(exp)
                print(f"{backend:10} 4 processes drain {args.drain_rows} rows in random order: "
                      f"{drain(tables, backend, args.drain_rows, 4)}", flush=True)
                if backend == "mysql":
                    print(f"{backend:10} the same with one locking SELECT (before the fix): "
                          f"{drain(tables, backend, args.drain_rows, 4, one_step=True)}", flush=True)
        finally:
            tables.drop_all()


if __name__ == "__main__":
    main()
