"""Interfaces of the ``crypto`` package that the other packages type against."""

from __future__ import annotations

from typing import Protocol


class SignatureScheme(Protocol):
    """A signature algorithm behind one interface, identified on the wire by ``tag``.

    Every signature is domain-separated: ``context`` is the FIPS 204 / FIPS 205 context string
    (at most 255 bytes) naming its purpose (see ``crypto.signatures.Context``). Schemes without a
    native context (Ed25519) prefix it to the message in the same length-prefixed form.
    """

    tag: int
    name: str
    public_key_len: int
    signature_len: int
    post_quantum: bool
    """True for the NIST post-quantum schemes (FIPS 204 ML-DSA, FIPS 205 SLH-DSA): required of node
    identity keys, which authenticate P2P sessions (``node.genesis``)."""

    def generate(self) -> tuple[bytes, bytes]:
        """Return a new ``(private_key, public_key)`` pair as raw bytes, from ``os.urandom``."""
        ...

    def public_key(self, private_key: bytes) -> bytes:
        """Return the public key of ``private_key``. Raises ``InvalidKey``."""
        ...

    def sign(self, private_key: bytes, context: bytes, message: bytes) -> bytes:
        """Sign ``message`` under ``context``. Raises ``InvalidKey``."""
        ...

    def verify(self, public_key: bytes, context: bytes, message: bytes, signature: bytes) -> None:
        """Return if the signature holds; raise ``InvalidSignature`` otherwise (also for bad lengths)."""
        ...
