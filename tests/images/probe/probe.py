"""Test container for the docker adapter: what it does is chosen by the keyfield ``mode``.

The parameters come as one JSON argument (argv[1]); when the command was overridden (argv[1]
missing or not JSON) they are read from $PY_EXPERIMENTER_PARAMS or /results/params.json.

Modes:
    ok          results.json {"echo": json(keyfields + custom), "argv": json(argv[1:])} and two
                logs.jsonl lines {"events": {"step": 1}}, {"events": {"step": 2}}
    fail        30 numbered lines "line 1".."line 30" on stderr, exit code 3
    sleep       sleep 300 s (for timeouts and cancellation)
    alloc       allocate and touch 1 GiB in 64 MiB chunks, then exit 0 (for memory limits)
    readonly    try to write /data/x; results {"data_writable": true|false}
    env         results {"env": json of the PY_EXPERIMENTER_* and TEST_* environment variables}
    badresults  results.json with a field the table does not have: {"nope": 1}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path("/results")
CHUNK = 64 * 1024 * 1024
PAGE = 4096


def read_params() -> dict:
    if len(sys.argv) > 1:
        try:
            params = json.loads(sys.argv[1])
        except ValueError:
            params = None
        if isinstance(params, dict):
            return params
    if os.environ.get("PY_EXPERIMENTER_PARAMS"):
        return json.loads(os.environ["PY_EXPERIMENTER_PARAMS"])
    return json.loads((RESULTS / "params.json").read_text())


def write_results(values: dict) -> None:
    (RESULTS / "results.json").write_text(json.dumps(values))


def main() -> int:
    params = read_params()
    keyfields = params.get("keyfields") or {}
    custom = params.get("custom") or {}
    mode = keyfields.get("mode", "ok")
    print(f"probe: mode={mode} experiment_id={params.get('experiment_id')}", flush=True)

    if mode == "ok":
        write_results({"echo": json.dumps({**keyfields, **custom}, sort_keys=True), "argv": json.dumps(sys.argv[1:])})
        with open(RESULTS / "logs.jsonl", "a") as logs:
            for step in (1, 2):
                logs.write(json.dumps({"events": {"step": step}}) + "\n")
    elif mode == "fail":
        for i in range(1, 31):
            print(f"line {i}", file=sys.stderr)
        return 3
    elif mode == "sleep":
        time.sleep(300)
    elif mode == "alloc":
        chunks = []
        for _ in range(1024 * 1024 * 1024 // CHUNK):
            chunk = bytearray(CHUNK)
            for offset in range(0, CHUNK, PAGE):  # touch every page so it is really resident
                chunk[offset] = 1
            chunks.append(chunk)
        print(f"probe: allocated {len(chunks) * CHUNK // 2**20} MiB", flush=True)
    elif mode == "readonly":
        try:
            Path("/data/x").write_text("x")
            writable = True
        except OSError:
            writable = False
        write_results({"data_writable": writable})
    elif mode == "env":
        env = {k: v for k, v in os.environ.items() if k.startswith(("PY_EXPERIMENTER_", "TEST_"))}
        write_results({"env": json.dumps(env, sort_keys=True)})
    elif mode == "badresults":
        write_results({"nope": 1})
    else:
        print(f"probe: unknown mode {mode!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
