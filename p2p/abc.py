"""Interfaces of the ``p2p`` package that other packages type against."""

from __future__ import annotations

from typing import Protocol

from crypto.keys import Address


class Transport(Protocol):
    """Sends opaque payloads to validators by node id; ``p2p.network.PeerNetwork`` implements it.

    Payloads are plaintext here: sealing and opening frames is the implementation's business.

    Receiving is not part of this interface: the implementation delivers ``(node_id, payload)`` on the
    memory channel it was built with.
    """

    def send(self, peer: Address, payload: bytes) -> bool:
        """Queue ``payload`` for ``peer`` without blocking; False if not connected or its queue is full."""
        ...

    def broadcast(self, payload: bytes) -> int:
        """Queue ``payload`` for every connected peer without blocking; return how many accepted it."""
        ...

    def disconnect(self, peer: Address, reason: str) -> bool:
        """Close the connection to a misbehaving ``peer``; whether there was one."""
        ...

    def penalize(self, peer: Address, reason: str, points: float = ...) -> bool:
        """Report a bad message from ``peer``: lower its score; True if that banned (and disconnected) it."""
        ...

    def connected(self) -> frozenset[Address]:
        """The node ids of the peers connected and authenticated right now."""
        ...
