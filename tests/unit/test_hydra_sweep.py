"""How a Hydra sweep's jobs become keyfield values (py_experimenter.hydra_sweep): the mapping
rule, which keys count as swept, and the fast path (overrides parsed, no composition) agreeing
with Hydra's own composition of each job."""

from __future__ import annotations

from pathlib import Path

import pytest

from py_experimenter.hydra_sweep import HydraSweepError, check_swept, fast_rows, job_keyfields, keyfield_for, swept_keys

hydra = pytest.importorskip("hydra", reason="hydra-core is in the test extra")

KEYFIELDS = ["dataset", "model", "model_lr", "depth"]


def test_a_dotted_key_maps_to_its_joined_name_else_its_last_component() -> None:
    assert keyfield_for("dataset", KEYFIELDS) == "dataset"
    assert keyfield_for("model.lr", KEYFIELDS) == "model_lr"
    assert keyfield_for("net.body.depth", KEYFIELDS) == "depth"
    assert keyfield_for("optimizer.momentum", KEYFIELDS) is None


def test_only_keys_whose_value_differs_are_swept() -> None:
    jobs = [["dataset=a", "train.epochs=7", "hydra.verbose=true"], ["dataset=b", "train.epochs=7", "+extra=1"]]
    assert sorted(swept_keys(jobs)) == ["dataset", "extra"]
    check_swept([["dataset=a", "x=1"], ["dataset=b", "x=1"]], KEYFIELDS, "t")
    with pytest.raises(HydraSweepError, match=r"swept parameters \['x'\] map to no keyfield.*\['dataset', 'model'"):
        check_swept([["dataset=a", "x=1"], ["dataset=a", "x=2"]], KEYFIELDS, "t")


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - model: small\n  - _self_\n"
                                          "dataset: iris\nnet:\n  body:\n    depth: 3\nderived: ${net.body.depth}\n")
    (tmp_path / "model" / "small.yaml").write_text("lr: 0.1\n")
    (tmp_path / "model" / "large.yaml").write_text("lr: 0.01\n")
    return tmp_path


def _compose(conf: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return cfg, cfg.hydra.runtime.choices


def test_the_fast_path_gives_what_composing_each_job_gives(conf: Path) -> None:
    jobs = [["dataset=wine", "net.body.depth=5"], ["dataset=iris", "model=large"], ["model.lr=0.5"]]
    base_cfg, base_choices = _compose(conf, [])
    fast = fast_rows(jobs[:1] + jobs[2:], KEYFIELDS, base_cfg, base_choices)
    composed = [job_keyfields(job, *_compose(conf, job), KEYFIELDS, "t") for job in jobs[:1] + jobs[2:]]
    assert fast == composed == [{"dataset": "wine", "model": "small", "model_lr": 0.1, "depth": 5},
                                {"dataset": "iris", "model": "small", "model_lr": 0.5, "depth": 3}]
    # a job that chooses a group, with a keyfield it does not override (model_lr comes from the group)
    assert fast_rows(jobs[1:2], KEYFIELDS, base_cfg, base_choices) is None
    assert job_keyfields(jobs[1], *_compose(conf, jobs[1]), KEYFIELDS, "t")["model_lr"] == 0.01


def test_an_interpolated_keyfield_is_composed_and_a_missing_one_is_named(conf: Path) -> None:
    base_cfg, base_choices = _compose(conf, [])
    assert fast_rows([["dataset=a"]], ["dataset", "derived"], base_cfg, base_choices) is None
    assert job_keyfields(["net.body.depth=9"], *_compose(conf, ["net.body.depth=9"]), ["derived"], "t") == \
        {"derived": 9}
    with pytest.raises(HydraSweepError, match="keyfield 'colour' of table 't' has no value"):
        job_keyfields(["dataset=a"], *_compose(conf, ["dataset=a"]), ["dataset", "colour"], "t")
