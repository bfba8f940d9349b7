"""A small TCP forwarder on 127.0.0.1 that can be frozen: a network that stops answering.

:meth:`Forwarder.freeze` stops moving bytes in both directions without closing anything,
and from then on accepts new connections but never answers them (like a partition behind a
NAT or a jump host that hangs). The peers' kernels still ACK what is sent, so only the
clients' own timeouts can notice.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Any


class Forwarder:
    """Forwards 127.0.0.1:<port> to ``target`` until frozen."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0
        self.accepted_while_frozen = 0
        threading.Thread(target=self._accept, name="forwarder-accept", daemon=True).start()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def freeze(self) -> None:
        """Stop forwarding; keep every socket open; accept new connections but never answer."""
        self._frozen.set()

    def close(self) -> None:
        """Close the listener and every connection."""
        self._closed.set()
        self._frozen.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            self.accepted += 1
            if self._frozen.is_set():
                self.accepted_while_frozen += 1
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._keep(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._closed.is_set():
            if self._frozen.is_set():
                self._closed.wait(0.05)  # frozen: read nothing, write nothing, close nothing
                continue
            try:
                readable, _, _ = select.select([source], [], [], 0.05)
                if not readable or self._frozen.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return
