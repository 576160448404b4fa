"""Errors of the ``state`` package."""

from __future__ import annotations


class StateError(Exception):
    """Root of every error raised by ``state``."""


class DecodeError(StateError):
    """Raised when bytes are not the canonical encoding of the expected value.

    The only error a decoder raises on arbitrary input (oversize, malformed msgpack, floats, maps,
    non-minimal forms, wrong shapes or lengths).
    """


class StoreCorrupted(StateError):
    """Raised when stored data disagrees with itself (height, root and latest block).

    Attributes:
        detail: what disagrees, in words an operator can act on.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(StateError):
    """Raised when a block, receipt or version asked for is not stored."""
