"""A TCP proxy in front of a real Redis, for the faults a client sees on the network: a reply
lost after Redis ran a transaction, or Redis unreachable for a while (a partition)."""

from __future__ import annotations

import contextlib
import socket
import threading

import dev


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to Redis on ``target_port``; faults are switched on by the test."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = dev.free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._drop_after: bytes | None = None
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_of_transaction_with(self, token: bytes) -> None:
        """Let the next MULTI/EXEC that contains ``token`` reach Redis, then drop its reply and the connection."""
        self._drop_after = token

    def cut(self) -> None:
        """Close every connection and refuse new ones, until :meth:`restore`."""
        with self._lock:
            self._cut = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._cut = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets |= {client, server}
            state = {"pending": b"", "drop": False}
            threading.Thread(target=self._pump, args=(client, server, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, state, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, state: dict, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client:
                    state["pending"] += data
                    token = self._drop_after
                    # A transaction: MULTI/EXEC, or a script (the worker's end write: EVALSHA).
                    whole = b"\r\nEXEC\r\n" in state["pending"] or b"EVALSHA" in state["pending"].upper()
                    if token and whole and token in state["pending"].upper():
                        self._drop_after, state["drop"] = None, True
                elif state["drop"]:
                    self.dropped += 1
                    break  # Redis ran it and answered; the client never hears
                elif _transaction_closed(state["pending"]):
                    # Redis answered what came before. Within a MULTI it answers each command as it
                    # arrives (+QUEUED), and the EXEC may come in a later read: keep what came since.
                    state["pending"] = b""
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets -= {source, sink}


def _transaction_closed(sent: bytes) -> bool:
    """True unless ``sent`` (RESP) opens a MULTI that no EXEC has closed yet."""
    upper = sent.upper()
    return upper.rfind(b"\r\nMULTI\r\n") <= upper.rfind(b"\r\nEXEC\r\n")
