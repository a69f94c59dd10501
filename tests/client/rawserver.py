"""A raw TCP server on loopback that answers with exactly the bytes, pauses and closes a test
scripts: slow headers, a trickled body, keep-alive whitespace, a body cut after the headers.
No HTTP framework would send these, which is the point: the client must survive them."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Script = Callable[[socket.socket], None]


class RawServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                self.script(conn)
            except OSError:
                pass  # the client hung up: that is what the tests provoke

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()


@contextmanager
def raw_server(script: Script) -> Iterator[RawServer]:
    server = RawServer(script)
    acceptor = threading.Thread(target=server._accept, daemon=True)
    acceptor.start()
    try:
        yield server
    finally:
        server.stop()
        acceptor.join(2)


def trickle(conn: socket.socket, data: bytes, every: float, until: float = 20.0) -> None:
    """Send ``data`` one byte per ``every`` seconds (for at most ``until`` seconds)."""
    end = time.monotonic() + until
    for i in range(len(data)):
        if time.monotonic() > end:
            return
        conn.sendall(data[i:i + 1])
        time.sleep(every)


def repeat(conn: socket.socket, data: bytes, every: float, until: float = 20.0) -> None:
    """Send ``data`` again every ``every`` seconds for at most ``until`` seconds."""
    end = time.monotonic() + until
    while time.monotonic() < end:
        conn.sendall(data)
        time.sleep(every)
