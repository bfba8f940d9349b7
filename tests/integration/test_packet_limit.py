"""A write larger than MySQL/MariaDB's max_allowed_packet: the server drops the connection
instead of answering, which looked like an outage (retried for database_outage_seconds, then the
executor gave up). It is refused up front with one InvalidValueError naming the setting; other
backends store it and read it back."""

from __future__ import annotations

import pandas as pd
import pytest

from py_experimenter.exceptions import InvalidValueError
from py_experimenter.queue import ExperimentQueue, WorkerIdentity
from py_experimenter.result_processor import ResultProcessor


@pytest.fixture
def setup(make_experimenter):
    exp = make_experimenter({"seed": {"type": "INT"}}, {"notes": "LONGTEXT", "data": "LONGBLOB", "score": "DOUBLE"},
                            {"trace": {"text": "LONGTEXT"}})
    exp.fill_table_with_rows([{"seed": 1}])
    queue = ExperimentQueue(exp.db, WorkerIdentity(name="packet"))
    experiment = queue.claim()
    assert experiment is not None
    yield exp, ResultProcessor(queue, experiment)
    queue.close()


def test_a_write_beyond_max_allowed_packet_is_refused_not_retried(setup, backend):
    exp, processor = setup
    limit = exp.db.max_packet_bytes() if backend.provider == "mysql" else 16 << 20
    assert limit is not None
    big = "x" * (limit + (1 << 20))  # just over the server's max_allowed_packet (MariaDB: 16 MiB)
    quoted = b"'" * (limit // 2 + (1 << 20))  # escaped on the wire: twice its size
    if backend.provider == "mysql":
        with pytest.raises(InvalidValueError, match=r"resultfield 'notes' \(LONGTEXT\).*max_allowed_packet"):
            processor.process_results({"score": 0.5, "notes": big})
        with pytest.raises(InvalidValueError, match=r"resultfield 'data' \(LONGBLOB\).*max_allowed_packet"):
            processor.process_results({"data": quoted})
        with pytest.raises(InvalidValueError, match=r"logtable 'trace' row 0: column 'text'.*max_allowed_packet"):
            processor.process_logs({"trace": {"text": big}})
        row = exp.get_table().iloc[0]
        assert pd.isna(row["notes"]) and pd.isna(row["score"])  # nothing of the refused call
        assert len(exp.get_logtable("trace")) == 0
    else:
        processor.process_results({"score": 0.5, "notes": big, "data": quoted})
        processor.process_logs({"trace": {"text": big}})
        row = exp.get_table().iloc[0]
        assert row["notes"] == big and bytes(row["data"]) == quoted
        assert list(exp.get_logtable("trace")["text"]) == [big]
    processor.process_results({"score": 0.25, "notes": "x" * (4 << 20)})  # large but within the packet
    row = exp.get_table().iloc[0]
    assert row["score"] == 0.25 and len(row["notes"]) == 4 << 20
