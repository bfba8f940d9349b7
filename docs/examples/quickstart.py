"""A complete experiment in the PyExperimenter 1.4.2 style, on the embedded SQLite default.

    python docs/examples/quickstart.py          # fill, execute, print the table

or, from a shell or a batch job, the same with the command line::

    py-experimenter fill config/example_sqlite.yml
    py-experimenter run  config/example_sqlite.yml --function docs/examples/quickstart.py:run_experiment
    py-experimenter status config/example_sqlite.yml

The "model" is a tiny ridge classifier on synthetic data (numpy only), so the example has
no heavy dependencies; swap in scikit-learn or anything else in your own function.
"""

from __future__ import annotations

import time

import numpy as np

from py_experimenter.experimenter import PyExperimenter
from py_experimenter.result_processor import ResultProcessor

FEATURES = {"linear": lambda x: x, "poly": lambda x: np.hstack([x, x**2]), "rbf": lambda x: np.exp(-(x**2))}


def run_experiment(keyfields: dict, result_processor: ResultProcessor, custom_fields: dict) -> None:
    """One grid point: fit on a seeded synthetic data set and report F1 scores."""
    started = time.perf_counter()
    rng = np.random.default_rng(keyfields["seed"] + (0 if keyfields["dataset"] == "iris" else 1000))
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(scale=0.5, size=300) > 0.5).astype(float)
    features = FEATURES[keyfields["kernel"]](x)
    split = int(len(x) * (1 - float(custom_fields["test_size"])))
    weights = np.zeros(features.shape[1])
    for epoch in range(1, 4):  # a few "epochs" of ridge refits, logged to the logtable
        penalty = 1.0 / epoch
        a = features[:split]
        weights = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ (2 * y[:split] - 1))
        loss = float(np.mean((a @ weights - (2 * y[:split] - 1)) ** 2))
        result_processor.process_logs({"epoch_scores": {"epoch": epoch, "loss": loss}})
    result_processor.process_results({
        "train_f1": _f1(y[:split], features[:split] @ weights > 0),
        "test_f1": _f1(y[split:], features[split:] @ weights > 0),
        "fit_seconds": time.perf_counter() - started,
        "pipeline": f"ridge(kernel={keyfields['kernel']})",
    })


def _f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    true_positive = float(np.sum((truth == 1) & predicted))
    return 2 * true_positive / max(1.0, float(np.sum(truth == 1) + np.sum(predicted)))


if __name__ == "__main__":
    experimenter = PyExperimenter("config/example_sqlite.yml", use_codecarbon=False)
    experimenter.fill_table_from_config()
    experimenter.execute(run_experiment, max_experiments=-1)
    table = experimenter.get_table()
    print(table[["ID", "dataset", "seed", "kernel", "status", "train_f1", "test_f1", "attempt"]].to_string(index=False))
