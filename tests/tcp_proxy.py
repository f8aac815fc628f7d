"""A TCP proxy in front of the real PostgreSQL, for faults no other test may see: the way
to make the database refuse or drop one client's connections without stopping the server
every other test uses. `cut()` closes the listening socket and every open connection, so
new connections are refused, as from a database that is down; `restore()` listens again
on the same port. `drops=N` closes the first N connections as soon as they are accepted
(a network blip or a pooler restart)."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from sqlalchemy import make_url


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to `target` while up; `accepted` counts connections."""

    def __init__(self, target: tuple[str, int], drops: int = 0) -> None:
        self.target = target
        self.drops = drops
        self.accepted = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        probe = socket.create_server(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self.restore()

    @classmethod
    def before(cls, url: str, drops: int = 0) -> tuple[CuttableProxy, str]:
        """A proxy to the database of `url`, and the URL that reaches it through the proxy."""
        target = make_url(url)
        proxy = cls((target.host or "127.0.0.1", target.port or 5432), drops)
        through = target.set(host="127.0.0.1", port=proxy.port)
        return proxy, through.render_as_string(hide_password=False)

    def restore(self) -> None:
        """Accept connections again."""
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR set
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            held, self._open = self._open, set()
        if listener is not None:
            listener.close()
        for conn in held:
            _close(conn)

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by cut()
                return
            self.accepted += 1
            if self.accepted <= self.drops:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    continue
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, sink}
            _close(source)
            _close(sink)


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()
