"""The encrypted keystore: round trips, tampering, malformed files, file mode, passphrase sources."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.exceptions import KeystoreError
from crypto.keys import KeyPair
from crypto.keystore import (
    VERSION,
    decrypt_key,
    encrypt_key,
    load_keystore,
    read_passphrase,
    save_keystore,
)
from crypto.signatures import ED25519, ML_DSA_44, ML_DSA_65, SLH_DSA_SHA2_128S

N = 2**10  # scrypt cost for tests: fast; the default (2**15) is exercised once below
PASSPHRASE = b"correct horse battery staple"
KEY = KeyPair.generate(ML_DSA_44)
OTHER = KeyPair.generate(ML_DSA_44)
DOC = encrypt_key(KEY, PASSPHRASE, scrypt_n=N)

few = settings(max_examples=25, deadline=None)


def _doc() -> dict[str, Any]:
    return copy.deepcopy(DOC)


def _flip_hex(text: str, index: int = 0) -> str:
    raw = bytearray(bytes.fromhex(text[2:]))
    raw[index % len(raw)] ^= 0x01
    return "0x" + raw.hex()


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = doc
    for name in parents:
        target = target[name]
    target[last] = value
    return doc


def _delete(doc: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = doc
    for name in parents:
        target = target[name]
    del target[last]
    return doc


# --- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [ML_DSA_44, ML_DSA_65, SLH_DSA_SHA2_128S, ED25519], ids=lambda s: s.name)
def test_round_trip_every_scheme(scheme: Any) -> None:
    key = KeyPair.generate(scheme)
    doc = encrypt_key(key, PASSPHRASE, scrypt_n=N)
    assert doc["scheme"] == scheme.name
    opened = decrypt_key(doc, PASSPHRASE)
    assert opened == key
    assert opened.private_key == key.private_key


def test_document_shape_and_no_plaintext_key() -> None:
    doc = _doc()
    assert doc["version"] == VERSION == 1
    assert doc["address"] == "0x" + KEY.address.hex()
    assert doc["publicKey"] == "0x" + KEY.public_key.hex()
    assert doc["kdf"] == {"name": "scrypt", "n": N, "r": 8, "p": 1, "salt": doc["kdf"]["salt"]}
    assert len(bytes.fromhex(doc["kdf"]["salt"][2:])) == 16
    assert doc["cipher"]["name"] == "chacha20-poly1305"
    assert len(bytes.fromhex(doc["cipher"]["nonce"][2:])) == 12
    assert len(bytes.fromhex(doc["ciphertext"][2:])) == len(KEY.private_key) + 16
    text = json.dumps(doc)
    assert KEY.private_key.hex() not in text
    assert KEY.private_key.hex().upper() not in text


def test_each_encryption_is_fresh() -> None:
    again = encrypt_key(KEY, PASSPHRASE, scrypt_n=N)
    assert again["kdf"]["salt"] != DOC["kdf"]["salt"]
    assert again["cipher"]["nonce"] != DOC["cipher"]["nonce"]
    assert again["ciphertext"] != DOC["ciphertext"]
    assert decrypt_key(again, PASSPHRASE) == KEY


def test_default_scrypt_cost(tmp_path: Path) -> None:
    path = tmp_path / "validator.json"
    save_keystore(path, KEY, PASSPHRASE)
    assert json.loads(path.read_text())["kdf"]["n"] == 2**15
    assert load_keystore(path, PASSPHRASE) == KEY


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "validator.json"
    save_keystore(path, KEY, PASSPHRASE, scrypt_n=N)
    assert load_keystore(path, PASSPHRASE) == KEY
    assert load_keystore(str(path), PASSPHRASE) == KEY  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["validator.json"]  # no temporary file left


def test_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "validator.json"
    save_keystore(path, KEY, PASSPHRASE, scrypt_n=N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_overwriting_a_readable_file_leaves_0600(tmp_path: Path) -> None:
    path = tmp_path / "validator.json"
    path.write_text("old")
    path.chmod(0o644)
    save_keystore(path, KEY, PASSPHRASE, scrypt_n=N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keystore(path, PASSPHRASE) == KEY


def test_stale_temporary_file_does_not_loosen_mode(tmp_path: Path) -> None:
    path = tmp_path / "validator.json"
    stale = tmp_path / "validator.json.tmp"  # left by a crash during an earlier save
    stale.write_text("partial")
    stale.chmod(0o644)
    save_keystore(path, KEY, PASSPHRASE, scrypt_n=N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- wrong passphrase and tampering -----------------------------------------------------------------


@few
@given(passphrase=st.binary(min_size=1, max_size=40).filter(lambda p: p != PASSPHRASE))
def test_wrong_passphrase(passphrase: bytes) -> None:
    with pytest.raises(KeystoreError):
        decrypt_key(_doc(), passphrase)


@pytest.mark.parametrize("passphrase", [PASSPHRASE + b"\n", PASSPHRASE[:-1], PASSPHRASE.upper(), b"x"])
def test_near_miss_passphrases(passphrase: bytes) -> None:
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        decrypt_key(_doc(), passphrase)


def test_empty_passphrase_refused_on_encrypt() -> None:
    with pytest.raises(KeystoreError):
        encrypt_key(KEY, b"", scrypt_n=N)


TAMPERED = {
    "address": _flip_hex(DOC["address"], 19),
    "address-other-key": "0x" + OTHER.address.hex(),
    "publicKey": _flip_hex(DOC["publicKey"], 7),
    "publicKey-other-key": "0x" + OTHER.public_key.hex(),
    "scheme": "ML-DSA-65",
    "scheme-ed25519": "Ed25519",
    "scheme-unknown": "RSA",
    "scheme-int": 1,
    "cipher.nonce": _flip_hex(DOC["cipher"]["nonce"], 0),
    "cipher.nonce-8-bytes": DOC["cipher"]["nonce"][:18],  # 8 bytes: a valid ChaCha20 nonce size
    "cipher.nonce-24-bytes": DOC["cipher"]["nonce"] + "00" * 12,  # XChaCha20 size
    "cipher.nonce-5-bytes": DOC["cipher"]["nonce"][:12],
    "cipher.nonce-not-hex": "0xzz",
    "cipher.name": "aes-256-gcm",
    "kdf.salt": _flip_hex(DOC["kdf"]["salt"], 15),
    "kdf.salt-empty": "0x",
    "kdf.salt-no-prefix": DOC["kdf"]["salt"][2:],
    "kdf.n": N * 2,
    "kdf.n-not-power-of-two": N + 1,
    "kdf.n-one": 1,
    "kdf.n-huge": 2**40,
    "kdf.n-negative": -N,
    "kdf.n-text": "lots",
    "kdf.n-nan": float("nan"),
    "kdf.r": 9,
    "kdf.r-zero": 0,
    "kdf.p": 2,
    "kdf.p-huge": 1000,
    "kdf.name": "pbkdf2",
    "ciphertext": _flip_hex(DOC["ciphertext"], 0),
    "ciphertext-tag": _flip_hex(DOC["ciphertext"], -1),
    "ciphertext-tag-only": "0x" + DOC["ciphertext"][-32:],
    "ciphertext-empty": "0x",
    "ciphertext-extended": DOC["ciphertext"] + "00",
    "version": 2,
    "version-zero": 0,
    "version-string": "1",
    "version-null": None,
}


@pytest.mark.parametrize(("field", "value"), list(TAMPERED.items()), ids=list(TAMPERED))
def test_altered_field_is_refused(field: str, value: Any) -> None:
    doc = _set(_doc(), field.split("-")[0], value)
    with pytest.raises(KeystoreError):
        decrypt_key(doc, PASSPHRASE)


def test_swapping_whole_identity_is_refused() -> None:
    # Address and public key of another key, consistent with each other: the AAD still binds them.
    doc = _set(_set(_doc(), "address", "0x" + OTHER.address.hex()), "publicKey", "0x" + OTHER.public_key.hex())
    with pytest.raises(KeystoreError):
        decrypt_key(doc, PASSPHRASE)


def test_ciphertext_of_another_keystore_is_refused() -> None:
    other = encrypt_key(OTHER, PASSPHRASE, scrypt_n=N)
    for fields in (("ciphertext",), ("ciphertext", "cipher"), ("ciphertext", "cipher", "kdf")):
        doc = _doc()
        for name in fields:
            doc[name] = copy.deepcopy(other[name])
        with pytest.raises(KeystoreError):
            decrypt_key(doc, PASSPHRASE)


@few
@given(index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_any_ciphertext_byte_flip_is_refused(index: int, mask: int) -> None:
    raw = bytearray(bytes.fromhex(DOC["ciphertext"][2:]))
    raw[index % len(raw)] ^= mask
    with pytest.raises(KeystoreError):
        decrypt_key(_set(_doc(), "ciphertext", "0x" + raw.hex()), PASSPHRASE)


_FIELDS = [
    "version",
    "scheme",
    "address",
    "publicKey",
    "kdf",
    "kdf.name",
    "kdf.n",
    "kdf.r",
    "kdf.p",
    "kdf.salt",
    "cipher",
    "cipher.name",
    "cipher.nonce",
    "ciphertext",
]

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_infinity=False)  # infinity: see test_infinite_scrypt_cost_is_keystore_error
    | st.text(max_size=20)
    | st.sampled_from(["0x", "0x00", DOC["address"], DOC["publicKey"], "ML-DSA-44", "scrypt"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@few
@given(field=st.sampled_from(_FIELDS), value=_json_values)
def test_any_field_change_gives_keystore_error_or_the_same_key(field: str, value: Any) -> None:
    try:
        key = decrypt_key(_set(_doc(), field, value), PASSPHRASE)
    except KeystoreError:
        return
    assert key == KEY  # a harmless respelling (e.g. n as 1024.0) may pass, but never another key


# --- malformed documents and files ------------------------------------------------------------------


@pytest.mark.parametrize("field", _FIELDS)
def test_missing_field(field: str) -> None:
    with pytest.raises(KeystoreError):
        decrypt_key(_delete(_doc(), field), PASSPHRASE)


@pytest.mark.parametrize("doc", [{}, [], None, "keystore", 1, {"version": 1}], ids=repr)
def test_not_a_keystore_document(doc: Any) -> None:
    with pytest.raises(KeystoreError):
        decrypt_key(doc, PASSPHRASE)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b"null", b"42", b'"text"', b"\xff\xfe{}", json.dumps(DOC).encode()[:-1], b"{}"],
    ids=["empty", "truncated", "array", "null", "number", "string", "not-utf8", "cut", "empty-object"],
)
def test_malformed_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "validator.json"
    path.write_bytes(content)
    with pytest.raises(KeystoreError):
        load_keystore(path, PASSPHRASE)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError):
        load_keystore(tmp_path / "absent.json", PASSPHRASE)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError):
        load_keystore(tmp_path, PASSPHRASE)


def test_deeply_nested_json_is_keystore_error(tmp_path: Path) -> None:
    path = tmp_path / "validator.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(KeystoreError):
        load_keystore(path, PASSPHRASE)


def test_infinite_scrypt_cost_is_keystore_error(tmp_path: Path) -> None:
    path = tmp_path / "validator.json"
    path.write_text(json.dumps(DOC).replace(f'"n": {N}', '"n": Infinity'))
    assert "Infinity" in path.read_text()
    with pytest.raises(KeystoreError):
        load_keystore(path, PASSPHRASE)


# --- passphrase sources -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"secret\n", b"secret"),
        (b"secret\r\n", b"secret"),
        (b"secret", b"secret"),
        (b"secret\n\n", b"secret"),
        (b"  pass word \n", b"  pass word "),  # only line endings are stripped
        ("pässwörd\n".encode(), "pässwörd".encode()),
    ],
)
def test_passphrase_from_file(tmp_path: Path, content: bytes, expected: bytes) -> None:
    path = tmp_path / "passphrase"
    path.write_bytes(content)
    assert read_passphrase(file=path) == expected
    assert read_passphrase(file=str(path)) == expected


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QENEX_TEST_PASSPHRASE", "from-env")
    assert read_passphrase(env="QENEX_TEST_PASSPHRASE") == b"from-env"


def test_file_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "passphrase"
    path.write_bytes(b"from-file\n")
    monkeypatch.setenv("QENEX_TEST_PASSPHRASE", "from-env")
    assert read_passphrase(file=path, env="QENEX_TEST_PASSPHRASE") == b"from-file"


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\n"], ids=["empty", "newline", "newlines"])
def test_empty_passphrase_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "passphrase"
    path.write_bytes(content)
    with pytest.raises(KeystoreError, match="empty"):
        read_passphrase(file=path)


def test_missing_passphrase_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError):
        read_passphrase(file=tmp_path / "absent")


def test_empty_or_unset_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QENEX_TEST_PASSPHRASE", "")
    with pytest.raises(KeystoreError, match="empty"):
        read_passphrase(env="QENEX_TEST_PASSPHRASE")
    monkeypatch.delenv("QENEX_TEST_PASSPHRASE")
    with pytest.raises(KeystoreError, match="empty"):
        read_passphrase(env="QENEX_TEST_PASSPHRASE")


def test_no_source() -> None:
    with pytest.raises(KeystoreError):
        read_passphrase()


def test_passphrase_file_opens_keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keystore, secret = tmp_path / "validator.json", tmp_path / "passphrase"
    secret.write_bytes(PASSPHRASE + b"\n")
    save_keystore(keystore, KEY, read_passphrase(file=secret), scrypt_n=N)
    monkeypatch.setenv("QENEX_TEST_PASSPHRASE", PASSPHRASE.decode())
    assert load_keystore(keystore, read_passphrase(env="QENEX_TEST_PASSPHRASE")) == KEY
