"""Errors of the ``crypto`` package (one root, each subclass says when it is raised)."""


class CryptoError(Exception):
    """Root of every error raised by ``crypto``."""


class InvalidSignature(CryptoError):
    """Raised when a signature does not verify for the given key, context and message."""


class UnknownScheme(CryptoError):
    """Raised when a scheme tag or name is not one this node implements.

    Attributes:
        scheme: the tag (int) or name (str) that was asked for.
    """

    def __init__(self, scheme: object) -> None:
        super().__init__(f"unknown signature scheme: {scheme!r}")
        self.scheme = scheme


class InvalidKey(CryptoError):
    """Raised when a public or private key has the wrong length or encoding for its scheme."""


class KeystoreError(CryptoError):
    """Raised when a keystore file is malformed, or the passphrase does not open it."""


class InvalidCiphertext(CryptoError):
    """Raised when an AEAD ciphertext does not authenticate under the given key, nonce and data.

    Also for a ciphertext shorter than its tag. Nothing of the plaintext is released.
    """
