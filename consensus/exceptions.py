"""Errors of the ``consensus`` package."""

from __future__ import annotations


class ConsensusError(Exception):
    """Root of every error raised by ``consensus``."""


class InvalidMessage(ConsensusError):
    """Raised when a consensus message (or certificate) from a peer is malformed or badly signed.

    A ``RemoteProtocolError`` in the sense of h11: it speaks of the peer, not of us.
    """


class InvalidCertificate(InvalidMessage):
    """Raised when a commit certificate lacks a quorum of valid, distinct signatures."""
