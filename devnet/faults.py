"""Fault injection between real node processes: a TCP proxy per link that can be cut and healed.

Each ordered pair of validators (i dials j) can be routed through a ``FaultProxy`` on 127.0.0.1
that forwards to j's P2P port; ``cut`` closes its live connections and refuses new ones until
``heal``. Cutting every proxy that touches a validator isolates it; nothing needs root.
"""

from __future__ import annotations

import trio


class FaultProxy:
    """Forwards TCP connections from ``listen_port`` to ``target_port`` on 127.0.0.1 while not cut."""

    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.is_cut = False
        self._scopes: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on an ephemeral port (given to ``task_status``) and forward until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.is_cut:
                return
            try:
                upstream = await trio.open_tcp_stream(self.host, self.target_port)
            except OSError:
                return
            async with upstream:
                with trio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                            nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
                    finally:
                        self._scopes.discard(scope)

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()

    def cut(self) -> None:
        """Drop every live connection and refuse new ones."""
        self.is_cut = True
        for scope in list(self._scopes):
            scope.cancel()

    def heal(self) -> None:
        """Forward again."""
        self.is_cut = False
