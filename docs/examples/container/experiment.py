"""An experiment packaged as a container: the contract of the docker adapter, by example.

The executor starts one container per experiment row and hands it the parameters as ONE JSON
argument (``argv[1]``); the same JSON is in ``/results/params.json`` and in the environment
variable ``PY_EXPERIMENTER_PARAMS``::

    {"experiment_id": 7, "attempt": 1, "table": "container_grid",
     "keyfields": {"dataset": "iris", "seed": 3}, "custom": {...},
     "results_dir": "/results", "data_dir": "/data"}      # data_dir is null without datasets

The container reports back through files in ``/results`` (a per-experiment host folder):

- ``results.json``: one JSON object, resultfield -> value, e.g. ``{"score": 0.42}``;
- ``logs.jsonl``: one JSON object per line, ``{"<logtable>": {field: value, ...}}``.

A non-zero exit code marks the row as an error, with the last 40 lines of what the container
printed in its ``error`` column (on success the output is not kept). Run it by hand with, e.g.::

    podman run --rm -v "$PWD/out:/results" py-experimenter/example:latest \\
        '{"keyfields": {"dataset": "iris", "seed": 1}, "results_dir": "/results"}'
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def read_params() -> dict:
    """The parameters: argv[1] if given, else $PY_EXPERIMENTER_PARAMS, else /results/params.json."""
    if len(sys.argv) > 1:
        return json.loads(sys.argv[1])
    if "PY_EXPERIMENTER_PARAMS" in os.environ:
        return json.loads(os.environ["PY_EXPERIMENTER_PARAMS"])
    return json.loads(Path("/results/params.json").read_text())


def fake_score(dataset: str, seed: int, step: int) -> float:
    """A deterministic stand-in for training: the same dataset, seed and step give the same value."""
    digest = hashlib.sha256(f"{dataset}/{seed}/{step}".encode()).digest()
    return round(0.5 + 0.1 * step + digest[0] / 2550, 4)  # grows with the step, in [0.6, 0.9]


def main() -> int:
    params = read_params()
    keyfields = params["keyfields"]
    results = Path(params.get("results_dir") or "/results")
    print(f"experiment {params.get('experiment_id')} (attempt {params.get('attempt')}): {keyfields}", flush=True)

    score = 0.0
    with open(results / "logs.jsonl", "a", encoding="utf-8") as logs:
        for step in range(1, 4):
            score = fake_score(keyfields["dataset"], int(keyfields["seed"]), step)
            # One line per log row: {"<logtable>": {field: value}}; flush so a crash keeps it.
            logs.write(json.dumps({"progress": {"step": step, "loss": round(1 - score, 4)}}) + "\n")
            logs.flush()
            print(f"step {step}: score {score}", flush=True)

    (results / "results.json").write_text(json.dumps({"score": score}), encoding="utf-8")
    print(f"done: score {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
