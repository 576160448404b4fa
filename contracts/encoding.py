"""The canonical encoding (``state.codec``) on the VM's hot path: the same bytes, computed faster.

``state.codec.encode`` walks every value through a generic converter and ``decode_value`` re-encodes
what it decoded to prove the input canonical; both are right for bytes from the network and too slow
for the VM, which reads and writes a few storage values per call. Here:

* ``encode_stored(v) == encode(v)`` for every profile value (hand-built msgpack for the common
  shapes: integers of any size, bytes, strings, short tuples of these);
* ``decode_stored(raw) == decode_value(raw)`` for every canonical ``raw``, without the re-encoding:
  it decodes values the VM itself wrote into the authenticated state, and still rejects anything
  outside the profile (floats, maps, foreign extension types) with ``DecodeError``;
* ``encoded_size(v) == len(encode(v))`` without building the bytes (the per-byte gas of events).

Tests check all three against ``state.codec`` on arbitrary profile values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgpack

from state.codec import MAX_BIGINT_BYTES, Value, encode
from state.exceptions import DecodeError

_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = (1 << 64) - 1
_FIXEXT: Final = {1: b"\xd4", 2: b"\xd5", 4: b"\xd6", 8: b"\xd7", 16: b"\xd8"}
_pack: Callable[[Value], bytes] = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_FAST_DEPTH: Final = 8
"""Deeper tuples go through ``state.codec.encode`` (which enforces the profile's nesting limit)."""


def _big_int(value: int) -> bytes:
    code, magnitude = (2, -value) if value < 0 else (1, value)
    n = (magnitude.bit_length() + 7) // 8
    if n > MAX_BIGINT_BYTES:
        raise ValueError(f"integer too large for the canonical profile ({n} bytes)")
    head = _FIXEXT.get(n)
    prefix = head + bytes((code,)) if head is not None else bytes((0xC7, n, code))
    return prefix + magnitude.to_bytes(n, "big")


def encode_stored(value: Value, _depth: int = 0) -> bytes:
    """``state.codec.encode(value)``, faster. Raises ``TypeError``/``ValueError`` as ``encode`` does."""
    t = type(value)
    if t is int:
        return _pack(value) if _INT_MIN <= value <= _INT_MAX else _big_int(value)
    if t is bytes or t is str or t is bool or value is None:
        return _pack(value)
    if t is tuple and _depth < _FAST_DEPTH:
        n = len(value)
        head = bytes((0x90 | n,)) if n < 16 else (b"\xdc" + n.to_bytes(2, "big") if n < 0x10000
                                                  else b"\xdd" + n.to_bytes(4, "big"))
        return head + b"".join([encode_stored(v, _depth + 1) for v in value])
    return encode(value)


def _ext_hook(code: int, data: bytes) -> int:
    if code not in (1, 2) or not data or data[0] == 0 or len(data) > MAX_BIGINT_BYTES:
        raise DecodeError(f"extension type {code} of {len(data)} bytes is not a canonical big integer")
    magnitude = int.from_bytes(data, "big")
    return -magnitude if code == 2 else magnitude


def _check(value: Value, depth: int) -> None:
    for v in value:
        t = type(v)
        if t is tuple:
            if depth >= 64:
                raise DecodeError("nesting deeper than 64")
            _check(v, depth + 1)
        elif not (t is int or t is bytes or t is str or t is bool or v is None):
            raise DecodeError(f"{t.__name__} is not part of the canonical profile")


def decode_stored(raw: bytes) -> Value:
    """Decode a value the VM stored (canonical bytes). Raises ``DecodeError`` for anything outside the profile."""
    try:
        value = msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=True, ext_hook=_ext_hook,
                                max_map_len=0, max_ext_len=MAX_BIGINT_BYTES, timestamp=0)
    except DecodeError:
        raise
    except Exception as err:  # msgpack raises many kinds on garbage
        raise DecodeError(f"not a stored value: {type(err).__name__}: {err}") from None
    t = type(value)
    if t is tuple:
        _check(value, 1)
    elif not (t is int or t is bytes or t is str or t is bool or value is None):
        raise DecodeError(f"{t.__name__} is not part of the canonical profile")
    return value


def encoded_size(value: Value) -> int:
    """``len(encode(value))`` computed without encoding.

    Raises ``TypeError`` for a value outside the profile and ``ValueError`` for an integer too
    large for it, as ``encode`` does.
    """
    t = type(value)
    n: int
    if t is bytes:
        n = len(value)
        return (2 if n < 0x100 else 3 if n < 0x10000 else 5) + n
    if t is int:
        if 0 <= value <= _INT_MAX:
            return 1 if value < 0x80 else 2 if value < 0x100 else 3 if value < 0x10000 else (
                5 if value < 0x100000000 else 9)
        if _INT_MIN <= value < 0:
            return 1 if value >= -32 else 2 if value >= -128 else 3 if value >= -32768 else (
                5 if value >= -(1 << 31) else 9)
        n = ((-value if value < 0 else value).bit_length() + 7) // 8
        if n > MAX_BIGINT_BYTES:
            raise ValueError(f"integer too large for the canonical profile ({n} bytes)")
        return 2 + n if n in _FIXEXT else 3 + n
    if t is tuple or t is list:
        n = len(value)
        size: int = 1 if n < 16 else 3 if n < 0x10000 else 5
        for v in value:
            size += encoded_size(v)
        return size
    if t is str:
        n = len(value.encode())
        return (1 if n < 32 else 2 if n < 0x100 else 3 if n < 0x10000 else 5) + n
    if t is bool or value is None:
        return 1
    raise TypeError(f"{t.__name__} is not encodable in the canonical profile")


_NAME_SIZES: dict[str, int] = {}


def event_size(name: str, topics: tuple[Value, ...], data: tuple[Value, ...]) -> int:
    """``len(encode((name, topics, data)))`` of an event (fast paths for addresses and small integers).

    Raises ``TypeError``/``ValueError`` as ``encode`` does.
    """
    size = _NAME_SIZES.get(name)
    if size is None:
        size = encoded_size(name)
        if len(_NAME_SIZES) < 1024:  # contracts use a handful of names; never grow without bound
            _NAME_SIZES[name] = size
    size += 1  # the header of the 3-array
    for part in (topics, data):
        n = len(part)
        size += 1 if n < 16 else 3 if n < 0x10000 else 5
        for v in part:
            if type(v) is bytes and len(v) == 20:
                size += 22
            elif type(v) is int and 0 <= v < 0x80:
                size += 1
            else:
                size += encoded_size(v)
    return size
