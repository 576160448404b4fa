"""Errors of the ``node`` package."""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error raised by ``node``."""


class ConfigError(NodeError):
    """Raised when config.toml, genesis.json or a key file is missing or invalid; says which and why."""


class InvalidBlock(NodeError):
    """Raised when a proposed or fetched block fails validation (roots, time, transactions).

    Attributes:
        reason: what did not hold.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProofRejected(NodeError):
    """Raised when a node's proof-carrying answer (``qnx_getProof``) does not prove what it claims.

    The certificate lacks a quorum of valid signatures of the validator set, the header is not the
    certified block or not of this chain, a Merkle proof does not lead to the header's state root,
    or the answer is malformed.

    Attributes:
        reason: what did not hold.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionClosedByNode(NodeError):
    """Raised by the WebSocket client (``node.rpc.client.WSClient``) for a call or subscription in
    progress when the connection ends without the client closing it.

    Attributes:
        code: the RFC 6455 close code (1008: the node cut off a client too slow to read its pushes;
            1006: the connection broke without a close frame), or None if unknown.
        reason: the close reason the node gave ("" if none).
    """

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"websocket closed by the node: {code} {reason}".strip())
        self.code = code
        self.reason = reason
