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


class VersionUnavailable(NotFound):
    """Raised when the state is read or proven at a version (block height) this store does not hold.

    Either the version is above the newest committed one, or it fell out of the retention window and
    was pruned.

    Attributes:
        version: the version asked for.
        oldest: the oldest version still readable.
        latest: the newest committed version.
    """

    def __init__(self, version: int, oldest: int, latest: int) -> None:
        where = "pruned" if version < oldest else "not committed yet"
        super().__init__(f"state version {version} is {where} (readable: {oldest}..{latest})")
        self.version = version
        self.oldest = oldest
        self.latest = latest


class InvalidProof(StateError):
    """Raised when a Merkle proof does not show what it is claimed to show against a root.

    Raised by ``state.proof.verify_proof``: the proof is malformed for the key, its leaf does not
    match the claimed value (or absence), or the hashes do not lead to the expected root.

    Attributes:
        reason: what did not hold.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
