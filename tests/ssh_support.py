"""The test SSH server of ``scripts/sshd``: port 2222 on 127.0.0.1 and 127.0.0.2, root logins by key."""

from __future__ import annotations

import socket
import time

SSH_PORT = 2222


def sshd_answers(address: str = "127.0.0.1") -> bool:
    """Whether an SSH server greets on ``address:SSH_PORT`` (a few tries over ~5 s)."""
    for _ in range(10):  # sshd may drop a probe while other logins are pending (MaxStartups)
        try:
            with socket.create_connection((address, SSH_PORT), timeout=2) as sock:
                if sock.recv(4) == b"SSH-":
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False
