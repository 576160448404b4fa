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
