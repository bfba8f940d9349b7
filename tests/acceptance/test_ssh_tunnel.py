"""The SSH jump host of PyExperimenter 1.4.2: the database is reachable only through SSH.

A real sshd (``scripts/sshd``: 127.0.0.1:2222, test keys in /root/.ssh) forwards to the real
MariaDB on 127.0.0.1:3306. The credential file names a database host that does not resolve,
so every experiment that finishes went through the tunnel.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from py_experimenter.exceptions import CredentialsError
from py_experimenter.experimenter import PyExperimenter
from tests.conftest import SERVER_URLS, experiment_yaml, require_server
from tests.ssh_support import SSH_PORT, sshd_answers

KEY = Path("/root/.ssh/py_experimenter_test")
KEY_WITH_PASSPHRASE = Path("/root/.ssh/py_experimenter_test_pass")
PASSPHRASE = "py-experimenter-test-passphrase"  # scripts/sshd's test key
UNREACHABLE = "db.unreachable.invalid"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

FUNCTION = textwrap.dedent('''
    import os, time

    def run(keyfields, result_processor, custom_fields):
        time.sleep(0.2)
        result_processor.process_logs({"trace": {"pid": os.getpid()}})
        result_processor.process_results({"value": keyfields["seed"] * 3})
''')


@pytest.fixture
def sshd() -> None:
    require_server("mysql")
    if not (sshd_answers() and KEY.exists() and KEY_WITH_PASSPHRASE.exists()):
        message = f"no test sshd on 127.0.0.1:{SSH_PORT} with keys {KEY}{{,_pass}}; run scripts/sshd"
        if CI:
            pytest.fail(message)
        pytest.skip("!!! SKIPPED, NO SSHD: " + message)


def _files(tmp_path: Path, ssh: dict[str, Any], n_jobs: int = 1, use_ssh: bool | None = None) -> tuple[Path, Path]:
    server = make_url(SERVER_URLS["mysql"])
    table = f"ssh_{uuid.uuid4().hex[:10]}"
    data = experiment_yaml("mysql", table, {"seed": {"type": "INT", "values": list(range(12))}},
                           {"value": "INT"}, {"trace": {"pid": "INT"}}, Execution={"heartbeat_seconds": 1})
    data["PY_EXPERIMENTER"]["n_jobs"] = n_jobs
    data["PY_EXPERIMENTER"]["Database"]["database"] = server.database
    if use_ssh is not None:
        data["PY_EXPERIMENTER"]["Database"]["use_ssh"] = use_ssh
    config = tmp_path / "experiment.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "ssh_fn.py").write_text(FUNCTION)
    return config, _credentials(tmp_path / "database_credentials.yml", ssh)


def _credentials(path: Path, ssh: dict[str, Any]) -> Path:
    server = make_url(SERVER_URLS["mysql"])
    path.write_text(yaml.safe_dump({"CREDENTIALS": {  # 1.4.2's layout
        "Database": {"user": server.username, "password": server.password},
        "Connection": {"Standard": {"server": UNREACHABLE}, "Ssh": ssh},
    }}, sort_keys=False))
    return path


def _port_is_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_fill_and_execute_with_two_processes_through_the_tunnel(tmp_path: Path, sshd: None) -> None:
    ssh = {"server": "127.0.0.1", "address": "127.0.0.1", "port": SSH_PORT, "user": "root",
           "private_key": str(KEY_WITH_PASSPHRASE), "ssh_private_key_password": PASSPHRASE,
           "remote_address": "127.0.0.1", "remote_port": 3306}
    config, credentials = _files(tmp_path, ssh, n_jobs=2)
    sys.path.insert(0, str(tmp_path))
    try:
        from ssh_fn import run  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    experimenter = PyExperimenter(str(config), str(credentials), use_ssh_tunnel=True, use_codecarbon=False)
    url = experimenter.db.url
    assert (url.host, url.username) == ("127.0.0.1", make_url(SERVER_URLS["mysql"]).username)
    assert url.port not in (None, 3306)  # the tunnel's local end, not the server
    try:
        assert experimenter.fill_table_from_config() == 12
        assert experimenter.execute(run, n_jobs=2) == 12
        table = experimenter.get_table()
        assert set(table["status"]) == {"done"}
        assert sorted(table["value"]) == [3 * seed for seed in range(12)]
        pids = set(experimenter.get_logtable("trace")["pid"])
        assert len(pids) == 2 and os.getpid() not in pids  # both forked executors worked through it
    finally:
        experimenter.delete_table()
        experimenter.close_ssh_tunnel()
    assert _port_is_closed(int(url.port or 0))
    tunnel = experimenter._ssh_tunnel
    assert tunnel is not None and not tunnel.is_active
    experimenter.close_ssh()  # 1.4.2's name; closing twice is harmless


def test_the_cli_follows_use_ssh_and_the_users_ssh_config(tmp_path: Path, sshd: None) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(textwrap.dedent(f"""
        Host pe-jump
            HostName 127.0.0.1
            Port {SSH_PORT}
            User root
            IdentityFile {KEY}
    """))
    config, credentials = _files(tmp_path, {"address": "pe-jump"}, use_ssh=True)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cli = [sys.executable, "-m", "py_experimenter.cli"]
    for command in (["fill", str(config), "--credentials", str(credentials)],
                    ["run", str(config), "--credentials", str(credentials), "--function", "ssh_fn:run",
                     "--n-jobs", "2"]):
        done = subprocess.run(cli + command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
    # this process's HOME has no such ssh config: without it, pe-jump is no usable host
    with pytest.raises(CredentialsError, match="no SSH key to log in to SSH server 'pe-jump'"):
        PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    direct = _credentials(tmp_path / "direct.yml", {"address": "127.0.0.1", "port": SSH_PORT, "user": "root",
                                                      "private_key": str(KEY)})
    checker = PyExperimenter(str(config), str(direct), use_codecarbon=False)
    try:
        table = checker.get_table()
        assert len(table) == 12 and set(table["status"]) == {"done"}
        assert len(set(checker.get_logtable("trace")["pid"])) == 2
    finally:
        checker.delete_table()
        checker.close_ssh_tunnel()


def test_wrong_passphrase_is_one_clear_error_without_the_passphrase(tmp_path: Path, sshd: None) -> None:
    wrong = "not-the-Passphrase-42"
    ssh = {"address": "127.0.0.1", "port": SSH_PORT, "user": "root", "private_key": str(KEY_WITH_PASSPHRASE),
           "ssh_private_key_password": wrong}
    config, credentials = _files(tmp_path, ssh, use_ssh=True)
    with pytest.raises(CredentialsError) as info:
        PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    message = str(info.value)
    assert "CREDENTIALS.Connection.Ssh.ssh_private_key_password" in message and str(credentials) in message
    assert "cannot decrypt the private key" in message and str(KEY_WITH_PASSPHRASE) in message
    assert wrong not in message and PASSPHRASE not in message
    # the CLI: one line, exit code 2 or 1, no passphrase
    done = subprocess.run([sys.executable, "-m", "py_experimenter.cli", "run", str(config), "--credentials",
                           str(credentials), "--function", "ssh_fn:run"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "cannot decrypt the private key" in done.stderr
    assert wrong not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_missing_passphrase_and_refused_login(tmp_path: Path, sshd: None) -> None:
    config, credentials = _files(tmp_path, {"address": "127.0.0.1", "port": SSH_PORT, "user": "root",
                                            "private_key": str(KEY_WITH_PASSPHRASE)}, use_ssh=True)
    with pytest.raises(CredentialsError, match="is encrypted: give its passphrase"):
        PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True, timeout=30)
    config, credentials = _files(tmp_path, {"address": "127.0.0.1", "port": SSH_PORT, "user": "root",
                                            "private_key": str(stranger), "ssh_config_file": None}, use_ssh=True)
    started = time.monotonic()
    with pytest.raises(CredentialsError, match=r"root@127\.0\.0\.1:2222 refused the login"):
        PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    assert time.monotonic() - started < 60


def test_without_sshtunnel_the_error_names_the_extra(tmp_path: Path, sshd: None) -> None:
    config, credentials = _files(tmp_path, {"address": "127.0.0.1", "port": SSH_PORT}, use_ssh=True)
    script = ("import sys; sys.modules['sshtunnel'] = None\n"  # as if the ssh extra were not installed
              "from py_experimenter.experimenter import PyExperimenter\n"
              "from py_experimenter.exceptions import ConfigError\n"
              "try:\n"
              f"    PyExperimenter({str(config)!r}, {str(credentials)!r}, use_codecarbon=False)\n"
              "except ConfigError as err:\n"
              "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "pip install 'py-experimenter[ssh]'" in done.stdout, done.stdout + done.stderr


def _session_pids(client_port: int) -> list[int]:
    """The sshd processes serving the SSH connection that comes from ``client_port``."""
    listing = subprocess.run(["ss", "-Htnp", f"( sport = :{SSH_PORT} and dport = :{client_port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    return [int(pid) for pid in re.findall(r"pid=(\d+)", listing)]


def test_a_dropped_ssh_connection_is_reopened(tmp_path: Path, sshd: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from py_experimenter.db import tunnel as tunnel_module

    monkeypatch.setattr(tunnel_module, "KEEPALIVE_S", 0.5)  # check the SSH connection often
    ssh = {"address": "127.0.0.1", "port": SSH_PORT, "user": "root", "private_key": str(KEY)}
    config, credentials = _files(tmp_path, ssh, use_ssh=True)
    experimenter = PyExperimenter(str(config), str(credentials), use_codecarbon=False)
    tunnel = experimenter._ssh_tunnel
    assert tunnel is not None
    try:
        assert experimenter.fill_table_from_config() == 12
        transport = tunnel._forwarder._transport
        client_port = transport.sock.getsockname()[1]
        pids = _session_pids(client_port)
        assert pids, "cannot find the sshd serving the tunnel"
        for pid in pids:
            os.kill(pid, 9)  # the SSH connection drops (as when a login node reboots)
        deadline = time.monotonic() + 30
        while tunnel._forwarder is None or tunnel._forwarder._transport is transport or not tunnel.is_active:
            assert time.monotonic() < deadline, "the tunnel was not reopened"
            time.sleep(0.2)
        # pooled connections died with the old SSH connection: the pool replaces them
        assert len(experimenter.db.run(experimenter.get_table)) == 12  # same local port, new SSH connection
    finally:
        experimenter.delete_table()
        experimenter.close_ssh_tunnel()
