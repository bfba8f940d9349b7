"""What ``run_hydra_task`` stores from a Hydra task's return value (py_experimenter.hydra_task.store_return),
through a real ResultProcessor on a real table: a number or text in the single resultfield, a dict in
the resultfields it names, and one clear error for everything else."""

from __future__ import annotations

import pytest

from py_experimenter.exceptions import InvalidResultFieldError
from py_experimenter.hydra_sweep import HydraSweepError
from py_experimenter.hydra_task import store_return
from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor
from py_experimenter.status import ExperimentStatus

KEYFIELDS = {"seed": {"type": "INT", "values": [1, 2, 3]}}


def _processor(exp) -> tuple[ExperimentQueue, ResultProcessor]:
    exp.fill_table_from_config()
    queue = ExperimentQueue(exp.db, WorkerIdentity(name="test"))
    experiment = queue.claim()
    assert experiment is not None
    return queue, ResultProcessor(queue, experiment)


def test_a_number_goes_to_the_single_resultfield(make_experimenter) -> None:
    exp = make_experimenter(KEYFIELDS, {"score": "DOUBLE"})
    queue, rp = _processor(exp)
    assert store_return(rp, 0.75) is None
    assert store_return(rp, ExperimentStatus.PAUSED) is ExperimentStatus.PAUSED
    assert store_return(rp, None) is None
    queue.close()
    assert exp.get_table().set_index("ID").loc[1, "score"] == 0.75


def test_several_resultfields_need_a_dict(make_experimenter) -> None:
    exp = make_experimenter(KEYFIELDS, {"score": "DOUBLE", "note": "VARCHAR(20)"})
    queue, rp = _processor(exp)
    with pytest.raises(HydraSweepError, match=r"has the resultfields \['score', 'note'\].*return a dict"):
        store_return(rp, 0.5)
    with pytest.raises(HydraSweepError, match=r"returned a list .*dict of resultfields \['score', 'note'\]"):
        store_return(rp, [0.5])
    with pytest.raises(InvalidResultFieldError, match=r"\['typo'\] are not resultfields.*\['score', 'note'\]"):
        store_return(rp, {"typo": 1})
    store_return(rp, {"score": 0.5, "note": "ok"})
    queue.close()
    row = exp.get_table().set_index("ID").loc[1]
    assert row["score"] == 0.5 and row["note"] == "ok"
