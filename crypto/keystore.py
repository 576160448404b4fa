"""Encrypted keystore files for validator, node and wallet keys.

The file is JSON (version 1)::

    {"version": 1, "scheme": "ML-DSA-44", "address": "0x…", "publicKey": "0x…",
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "0x…(16 bytes)"},
     "cipher": {"name": "chacha20-poly1305", "nonce": "0x…(12 bytes)"},
     "ciphertext": "0x…(private key ‖ 16-byte tag)"}

The key-encryption key is scrypt (RFC 7914) of the passphrase; the private key is sealed with
ChaCha20-Poly1305 (RFC 8439) whose associated data binds version, scheme, address and public key,
so no header field can be swapped without the tag failing. The passphrase comes from a file or an
environment variable (``read_passphrase``), never from code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from Crypto.Cipher import ChaCha20_Poly1305

from crypto.exceptions import CryptoError, KeystoreError
from crypto.keys import KeyPair
from crypto.signatures import scheme_by_name

VERSION = 1
DEFAULT_SCRYPT_N = 1 << 15


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _unhex(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise KeystoreError(f"keystore field {what} must be a 0x-hex string")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as err:
        raise KeystoreError(f"keystore field {what} is not hex") from err


def _kek(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    if n < 2 or n & (n - 1) or n > 1 << 20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise KeystoreError(f"unsupported scrypt parameters n={n} r={r} p={p}")
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def _aad(scheme: str, address: bytes, public_key: bytes) -> bytes:
    return b"QENEX keystore v1|" + scheme.encode() + b"|" + address + public_key


def encrypt_key(key: KeyPair, passphrase: bytes, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> dict[str, Any]:
    """Seal ``key`` under ``passphrase``; returns the JSON-ready keystore document."""
    if not passphrase:
        raise KeystoreError("the passphrase must not be empty")
    salt, nonce = os.urandom(16), os.urandom(12)
    scheme = key.scheme.name
    cipher = ChaCha20_Poly1305.new(key=_kek(passphrase, salt, scrypt_n, 8, 1), nonce=nonce)
    cipher.update(_aad(scheme, key.address, key.public_key))
    sealed, tag = cipher.encrypt_and_digest(key.private_key)
    return {
        "version": VERSION,
        "scheme": scheme,
        "address": _hex(key.address),
        "publicKey": _hex(key.public_key),
        "kdf": {"name": "scrypt", "n": scrypt_n, "r": 8, "p": 1, "salt": _hex(salt)},
        "cipher": {"name": "chacha20-poly1305", "nonce": _hex(nonce)},
        "ciphertext": _hex(sealed + tag),
    }


def decrypt_key(doc: dict[str, Any], passphrase: bytes) -> KeyPair:
    """Open a keystore document. Raises ``KeystoreError`` (malformed, or wrong passphrase)."""
    try:
        if doc.get("version") != VERSION:
            raise KeystoreError(f"unsupported keystore version {doc.get('version')!r}")
        scheme = scheme_by_name(doc["scheme"])
        address = _unhex(doc["address"], "address")
        public_key = _unhex(doc["publicKey"], "publicKey")
        kdf, cipher_doc = doc["kdf"], doc["cipher"]
        if kdf.get("name") != "scrypt" or cipher_doc.get("name") != "chacha20-poly1305":
            raise KeystoreError("keystore must use scrypt and chacha20-poly1305")
        kek = _kek(passphrase, _unhex(kdf["salt"], "kdf.salt"), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        blob = _unhex(doc["ciphertext"], "ciphertext")
        if len(blob) < 17:
            raise KeystoreError("keystore ciphertext is too short")
        cipher = ChaCha20_Poly1305.new(key=kek, nonce=_unhex(cipher_doc["nonce"], "cipher.nonce"))
        cipher.update(_aad(doc["scheme"], address, public_key))
        try:
            private_key = cipher.decrypt_and_verify(blob[:-16], blob[-16:])
        except ValueError as err:
            raise KeystoreError("wrong passphrase, or the keystore was altered") from err
        key = KeyPair.from_private(scheme.tag, private_key)
    except KeystoreError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, CryptoError) as err:
        raise KeystoreError(f"malformed keystore: {err}") from err
    if key.public_key != public_key or key.address != address:
        raise KeystoreError("keystore public key or address does not match its private key")
    return key


def save_keystore(path: Path, key: KeyPair, passphrase: bytes, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
    """Write ``key`` sealed under ``passphrase`` to ``path`` (mode 0600, written atomically)."""
    doc = encrypt_key(key, passphrase, scrypt_n=scrypt_n)
    path = Path(path)
    # mkstemp creates a new file (O_EXCL, mode 0600): no leftover file or symlink is reused.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_keystore(path: Path, passphrase: bytes) -> KeyPair:
    """Read and open the keystore at ``path``. Raises ``KeystoreError``."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise KeystoreError(f"cannot read keystore {path}: {type(err).__name__}") from err
    if not isinstance(doc, dict):
        raise KeystoreError(f"keystore {path} is not a JSON object")
    return decrypt_key(doc, passphrase)


def read_passphrase(*, file: str | os.PathLike[str] | None = None, env: str | None = None) -> bytes:
    """The passphrase from ``file`` (trailing newline stripped) or from environment variable ``env``.

    Raises ``KeystoreError`` when neither gives a non-empty passphrase.
    """
    if file is not None:
        try:
            value = Path(file).read_bytes().rstrip(b"\r\n")
        except OSError as err:
            raise KeystoreError(f"cannot read passphrase file {file}: {err}") from err
    elif env is not None:
        value = os.environ.get(env, "").encode()
    else:
        raise KeystoreError("give a passphrase file or an environment variable")
    if not value:
        raise KeystoreError(f"empty passphrase (from {'file ' + str(file) if file else 'env ' + str(env)})")
    return value
