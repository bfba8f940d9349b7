"""``py-experimenter status``: who runs what — running experiments per machine / job, and the
executors of this table's launches per host (from the launch records in ``--log-dir``)."""

from __future__ import annotations

import importlib
import os
from collections import defaultdict
from typing import Any, TextIO

import sqlalchemy as sa
from tabulate import tabulate

from py_experimenter.launchers.records import launch_records

__all__ = ["launched_executors", "print_report", "running_by_worker"]


def running_by_worker(experimenter: Any) -> list[dict[str, Any]]:
    """One entry per executor process with running experiments: machine, job id, worker and
    the experiment IDs it holds (one query over the main table's ``running`` rows)."""
    main = experimenter.db.schema.main
    query = (sa.select(main.c.machine, main.c.job_id, main.c.worker, main.c.ID)
             .where(main.c.status == "running").order_by(main.c.machine, main.c.worker, main.c.ID))
    with experimenter.db.connect() as conn:
        rows = conn.execute(query).all()
    grouped: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for machine, job_id, worker, experiment in rows:
        grouped[(machine or "?", job_id or "", worker or "?")].append(int(experiment))
    return [{"machine": machine, "job_id": job_id, "worker": worker, "ids": ids}
            for (machine, job_id, worker), ids in grouped.items()]


def launched_executors(log_dir: str | os.PathLike[str], table: str,
                       running: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target (host, Slurm job) of every launch of ``table`` not stopped and not ended:
    executors started, still running (None: the host did not answer), and the running
    experiments of its executors (matched by ``worker``, or for Slurm by ``job_id``; None when
    unknown)."""
    found = []
    for _, record in launch_records(log_dir, table):
        try:
            module = importlib.import_module(f"py_experimenter.launchers.{record['backend']}")
        except ImportError:
            continue
        if hasattr(module, "targets"):
            targets = module.targets(record)
        else:
            targets = {name: {"started": started, "alive": alive, "workers": None}
                       for name, (started, alive) in module.alive_by_target(record).items()}
        if targets and all(target["alive"] == 0 for target in targets.values()):
            continue  # a launch whose executors all ended: nothing to show (its record stays for --stop)
        for name, target in targets.items():
            found.append({"backend": record["backend"], "target": name, "started": target["started"],
                          "alive": target["alive"], "experiments": _experiments(record, target, running)})
    return found


def _experiments(record: dict[str, Any], target: dict[str, Any], running: list[dict[str, Any]]) -> int | None:
    workers = target.get("workers")
    if workers is not None:
        return sum(len(entry["ids"]) for entry in running if entry["worker"] in workers)
    job_ids = [str(job) for job in record.get("job_ids", [])]
    if job_ids:  # Slurm: the rows' job_id is "<job>" or "<array job>_<task>"
        return sum(len(entry["ids"]) for entry in running
                   if any(entry["job_id"] == job or entry["job_id"].startswith(job + "_") for job in job_ids))
    return None


def print_report(experimenter: Any, log_dir: str | os.PathLike[str], out: TextIO) -> None:
    """Print the running experiments per machine / job, and the launched executors per host."""
    running = running_by_worker(experimenter)
    if running:
        rows = [(e["machine"], e["job_id"], e["worker"], len(e["ids"]), _ids(e["ids"])) for e in running]
        print("\nrunning experiments per executor", file=out)
        print(tabulate(rows, headers=["machine", "job", "worker", "running", "IDs"], tablefmt="simple"), file=out)
    launched = launched_executors(log_dir, experimenter.config.table.name, running)
    if launched:
        table_rows = [(e["backend"], e["target"], e["started"], "?" if e["alive"] is None else e["alive"],
                 "" if e["experiments"] is None else e["experiments"]) for e in launched]
        print("\nlaunched executors (launch records in "
              f"{os.path.join(os.fspath(log_dir), experimenter.config.table.name)})", file=out)
        print(tabulate(table_rows, headers=["backend", "host", "started", "running", "experiments"],
                       tablefmt="simple"), file=out)


def _ids(ids: list[int], shown: int = 8) -> str:
    text = ", ".join(str(i) for i in ids[:shown])
    return text + (f", ... ({len(ids)})" if len(ids) > shown else "")
