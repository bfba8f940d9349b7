"""The Slurm launcher's option checks (time limit, memory, --sbatch, GPUs) and what they become
for submitit: no Slurm needed."""

from __future__ import annotations

import argparse

import pytest

from py_experimenter.exceptions import LaunchError
from py_experimenter.launchers.slurm import _parameters, add_arguments, slurm_options
from py_experimenter.launchers.slurm_checks import Partition, parse_mem, parse_sbatch_option, parse_time_limit


@pytest.mark.parametrize(("value", "minutes"), [
    (90, 90), (0.5, 1), ("90", 90), ("90m", 90), ("2h", 120), ("1.5h", 90), ("1d", 1440), ("30s", 1),
    ("01:30:00", 90), ("10:30", 11), ("1-12:00", 2160), ("2-0", 2880), ("1-00:00:30", 1441), (" 45 min ", 45),
])
def test_time_limits(value, minutes: int):
    assert parse_time_limit(value) == minutes


@pytest.mark.parametrize("value", ["soon", "", "0", "-5", "1:2:3:4", "infinite", "5 weeks", "nan"])
def test_bad_time_limits_name_the_forms(value):
    with pytest.raises(LaunchError, match=r"is not a time limit; give minutes \(90\), '90m', '2h'"):
        parse_time_limit(value)


@pytest.mark.parametrize(("value", "slurm"), [
    ("4G", "4096M"), ("4GB", "4096M"), ("4GiB", "4096M"), ("1.5g", "1536M"), ("500M", "500M"), (512, "512M"),
    ("2048K", "2M"), ("1T", "1048576M"),
])
def test_memory(value, slurm: str):
    assert parse_mem(value) == slurm


@pytest.mark.parametrize("value", ["4 gigs", "", "0", "-1G", "G", "0.5K", True])
def test_bad_memory(value):
    with pytest.raises(LaunchError, match="is not an amount of memory; give '4G', '500M'"):
        parse_mem(value)


def test_sbatch_options():
    assert parse_sbatch_option("constraint=a100") == ("constraint", "a100")
    assert parse_sbatch_option("--mail_type=END") == ("mail-type", "END")
    assert parse_sbatch_option("exclusive") == ("exclusive", True)
    with pytest.raises(LaunchError, match="expected KEY=VALUE"):
        parse_sbatch_option("=x")


def test_partition_time_limits():
    assert Partition("p", True, None, None).time_limit(None, 60) == 60
    assert Partition("p", True, None, 30).time_limit(None, 60) == 30
    assert Partition("p", True, 15, 30).time_limit(None, 60) == 15
    assert Partition("p", True, 15, 30).time_limit(120, 60) == 120  # sbatch judges what was asked


def test_options_become_submitit_parameters():
    options = slurm_options(partition="gpu", time_limit="2h", cpus_per_executor=4, mem="8G", gpus="a100:2",
                            array_parallelism=5, account="lab", qos="short", sbatch=["constraint=x", "exclusive"],
                            setup=["module load python"], signal_seconds=120)
    parameters = _parameters(options, 120, 10, "pyexp-t")
    assert parameters == {
        "name": "pyexp-t", "timeout_min": 120, "cpus_per_task": 4, "tasks_per_node": 1, "nodes": 1,
        "slurm_signal_delay_s": 120, "slurm_array_parallelism": 5,
        "slurm_additional_parameters": {"constraint": "x", "exclusive": True, "mem": "8192M"},
        "slurm_setup": ["module load python"], "slurm_partition": "gpu", "slurm_gres": "gpu:a100:2",
        "slurm_account": "lab", "slurm_qos": "short",
    }
    plain = _parameters(slurm_options(gpus="1"), 60, 3, "n")
    assert plain["gpus_per_node"] == 1 and plain["slurm_array_parallelism"] == 3
    assert "slurm_partition" not in plain and "slurm_gres" not in plain


def test_options_render_as_sbatch_lines(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    options = slurm_options(time_limit=30, mem="2G", sbatch={"constraint": "x"}, setup=["echo hi"])
    parameters = _parameters(options, 30, 4, "pyexp-t")
    flat = {"job_name": parameters["name"], "time": 30, "cpus_per_task": 1, "ntasks_per_node": 1,
            "signal_delay_s": parameters["slurm_signal_delay_s"], "additional_parameters":
            parameters["slurm_additional_parameters"], "setup": parameters["slurm_setup"], "map_count": 4,
            "array_parallelism": parameters["slurm_array_parallelism"]}
    text = _make_sbatch_string(command="run", folder=tmp_path, **flat)
    for line in ("#SBATCH --array=0-3%4", "#SBATCH --time=30", "#SBATCH --mem=2048M", "#SBATCH --constraint=x",
                 "#SBATCH --signal=USR2@90", "#SBATCH --job-name=pyexp-t", "echo hi"):
        assert line in text.splitlines(), text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cpus_per_executor": 0}, "cpus_per_executor=0: expected a whole number of at least 1"),
    ({"array_parallelism": -2}, "array_parallelism=-2"),
    ({"gpus": "lots"}, "gpus='lots': expected a number of GPUs per executor"),
    ({"signal_seconds": -1}, "signal_seconds=-1"),
])
def test_bad_options(kwargs, message: str):
    with pytest.raises(LaunchError, match=message):
        slurm_options(**kwargs)


def test_command_line_options_map_onto_the_launcher():
    parser = argparse.ArgumentParser()
    add_arguments(parser.add_argument_group("slurm"))
    args = parser.parse_args(["--partition", "debug", "--time", "90m", "--cpus", "2", "--mem", "1G", "--gpus", "1",
                              "--array-parallelism", "2", "--account", "a", "--qos", "q", "--sbatch", "x=1",
                              "--sbatch", "y=2", "--setup", "echo 1", "--signal-seconds", "60"])
    assert (args.partition, args.slurm_time, args.slurm_cpus, args.slurm_mem, args.slurm_gpus) == (
        "debug", "90m", 2, "1G", "1")
    assert (args.array_parallelism, args.account, args.qos, args.sbatch, args.setup, args.signal_seconds) == (
        2, "a", "q", ["x=1", "y=2"], ["echo 1"], 60)
