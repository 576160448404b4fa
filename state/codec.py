"""The canonical msgpack profile: the one encoding that is hashed, signed and sent.

Profile (DESIGN.md "Encoding"):

* values: ``None``, ``bool``, integers, ``bytes``, UTF-8 ``str``, arrays (Python tuples); no floats,
  no maps, no other msgpack extension types;
* integers in [-2**63, 2**64) use msgpack's shortest integer form; integers outside it use
  extension type 1 (non-negative) or 2 (negative) holding the magnitude big-endian without leading
  zero bytes, at most 64 bytes (so up to 2**512 - 1): arbitrary precision, losslessly;
* structs (frozen dataclasses deriving from ``Struct``) are arrays of their fields in declaration
  order;
* every encoding is msgpack's shortest form, so a value has exactly one encoding and
  ``encode(decode(b)) == b`` holds for every accepted ``b``: decoders re-encode and compare.

Decoders take a size limit checked before anything is allocated, and raise only ``DecodeError``.
This module imports nothing of the node: every package may use it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

import msgpack

from crypto.hashing import Hash32
from crypto.keys import Address
from state.exceptions import DecodeError

EXT_BIGINT_POS = 1
EXT_BIGINT_NEG = 2
MAX_BIGINT_BYTES = 64
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1

Value = Any
"""Any value of the profile (None, bool, int, bytes, str, tuple of Values)."""

FIXED_LENGTHS: dict[object, int] = {Hash32: 32, Address: 20}
"""NewTypes over ``bytes`` whose encoded length is fixed, checked on decode."""


MAX_DEPTH = 64
"""Deepest array nesting of the profile (encoders and decoders both enforce it)."""


def _to_wire(value: Value, depth: int = 0) -> Any:
    """Map a value to what msgpack packs: big integers to ext types, structs to lists."""
    t = type(value)
    if t is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        magnitude = -value if value < 0 else value
        raw = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")
        if len(raw) > MAX_BIGINT_BYTES:
            raise ValueError(f"integer too large for the canonical profile ({len(raw)} bytes)")
        return msgpack.ExtType(EXT_BIGINT_NEG if value < 0 else EXT_BIGINT_POS, raw)
    if t is bytes or t is str or t is bool or value is None:
        return value
    if depth >= MAX_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_DEPTH}")
    if t is tuple or t is list:
        return [_to_wire(v, depth + 1) for v in value]
    if isinstance(value, Struct):
        return [_to_wire(getattr(value, name), depth + 1) for name in value._field_names()]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{t.__name__} is not encodable in the canonical profile")


def _ext_hook(code: int, data: bytes) -> int:
    if code not in (EXT_BIGINT_POS, EXT_BIGINT_NEG):
        raise DecodeError(f"extension type {code} is not part of the profile")
    if not data or data[0] == 0 or len(data) > MAX_BIGINT_BYTES:
        raise DecodeError("big integer with leading zero bytes, empty, or too large")
    magnitude = int.from_bytes(data, "big")
    value = -magnitude if code == EXT_BIGINT_NEG else magnitude
    if _INT_MIN <= value <= _INT_MAX:
        raise DecodeError("integer in the native range encoded as a big integer")
    return value


def encode(value: Value) -> bytes:
    """The canonical encoding of ``value`` (a profile value or a ``Struct``).

    Raises ``TypeError`` for a type outside the profile, ``ValueError`` for an integer beyond
    2**512 - 1 or nesting deeper than ``MAX_DEPTH``.
    """
    if isinstance(value, Struct):
        return value.encode()
    packed: bytes = msgpack.packb(_to_wire(value), use_bin_type=True)
    return packed


def _has_encoding(value: Value) -> bool:
    """Whether ``value`` is a struct, or an array of structs, whose encoding is already known (then
    joining the parts beats packing the whole again)."""
    if isinstance(value, Struct):
        return "_encoding" in value.__dict__
    return type(value) is tuple and bool(value) and isinstance(value[0], Struct) and "_encoding" in value[0].__dict__


def _array_header(n: int) -> bytes:
    """msgpack's shortest array header for ``n`` elements (fixarray, array 16, array 32)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _encode_at(value: Value, depth: int) -> bytes:
    """``encode(value)`` for a value nested ``depth`` arrays deep: structs (and arrays of structs)
    are joined from their own cached encodings, since an array encodes as its header followed by
    its elements' encodings; anything else is packed in one call."""
    if isinstance(value, Struct):
        return value._encode_at(depth)
    if type(value) is tuple and value and all(isinstance(v, Struct) for v in value):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        return _array_header(len(value)) + b"".join(v._encode_at(depth + 1) for v in value)
    packed: bytes = msgpack.packb(_to_wire(value, depth), use_bin_type=True)
    return packed


def decode_value(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Value:
    """Decode canonical bytes into a plain value (arrays become tuples). Raises ``DecodeError``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("expected bytes")
    if len(data) > max_size:
        raise DecodeError(f"encoding is {len(data)} bytes, over the limit of {max_size}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            ext_hook=_ext_hook,
            max_map_len=0,
            max_ext_len=MAX_BIGINT_BYTES,
            timestamp=0,
        )
    except DecodeError:
        raise
    except Exception as err:  # msgpack raises many kinds on garbage: all mean "not our encoding"
        raise DecodeError(f"not a msgpack value: {type(err).__name__}: {err}") from None
    _check_profile(value, 0)
    try:
        # the profile check left only None, bool, int, bytes, str and tuples: msgpack packs those
        # as the profile does, except integers beyond its native range (ext types here)
        canonical = msgpack.packb(value, use_bin_type=True)
    except OverflowError:
        try:
            canonical = encode(value)
        except (TypeError, ValueError) as err:
            raise DecodeError(str(err)) from None
    if canonical != bytes(data):
        raise DecodeError("encoding is not canonical (a shorter form exists)")
    return value


def attach_encodings(value: Struct, data: bytes, *, element: int | None = None) -> None:
    """Record on ``value``, and on the structs nested in it, the slices of ``data`` that encode
    them, so that encoding or hashing them later (a block's transactions, say) reuses those bytes
    instead of encoding again. ``data`` must be the canonical encoding ``value`` was decoded from
    (``decode_value`` checked it), or, with ``element``, of an array whose element at that index
    ``value`` is. Structs whose class sets ``_encoding_leaf`` get their slice without the walk
    descending into their fields. Raises ``DecodeError`` if ``data`` does not have that shape.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        if element is not None:
            if unpacker.read_array_header() <= element:
                raise DecodeError("no such element")
            for _ in range(element):
                unpacker.skip()
        _attach(value, unpacker, data)
    except DecodeError:
        raise
    except Exception as err:
        raise DecodeError(f"encoding does not match the value: {type(err).__name__}") from None


def _attach(value: Value, unpacker: Any, data: bytes) -> None:
    if isinstance(value, Struct):
        start = unpacker.tell()
        if getattr(value, "_encoding_leaf", False):
            unpacker.skip()
        else:
            unpacker.read_array_header()
            for name in value._field_names():
                _attach(getattr(value, name), unpacker, data)
        value.__dict__["_encoding"] = data[start:unpacker.tell()]
    elif type(value) is tuple and value and isinstance(value[0], Struct):
        unpacker.read_array_header()
        for v in value:
            _attach(v, unpacker, data)
    else:
        unpacker.skip()


def _check_profile(value: Value, depth: int) -> None:
    t = type(value)
    if t is tuple:
        if depth >= MAX_DEPTH:  # the same bound as ``_to_wire``: an array at depth 64 is one too many
            raise DecodeError(f"nesting deeper than {MAX_DEPTH}")
        for v in value:
            _check_profile(v, depth + 1)
    elif not (t is int or t is bytes or t is str or t is bool or value is None):
        raise DecodeError(f"{t.__name__} is not part of the canonical profile")


S = TypeVar("S", bound="Struct")
_Conv = Callable[[Any], Any]


class Struct:
    """Base of every chain type: a frozen dataclass encoded as the array of its fields.

    Subclasses are ``@dataclass(frozen=True)``; field annotations drive decoding (``int``, ``str``,
    ``bytes``, ``bool``, NewTypes of these, ``Hash32``/``Address`` with fixed lengths, nested
    ``Struct``, ``X | None``, ``tuple[X, ...]`` and ``Value`` for any profile value).
    """

    _decoder: ClassVar[_Conv | None] = None
    _names: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        names = cls.__dict__.get("_names")
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            cls._names = names
        return names

    def encode(self) -> bytes:
        """The canonical encoding of this struct, computed once per object (structs are frozen, so
        a message retransmitted or a block stored after it was proposed is not encoded again)."""
        return self._encode_at(0)

    def _encode_at(self, depth: int) -> bytes:
        cached: bytes | None = self.__dict__.get("_encoding")
        if cached is None:
            if depth >= MAX_DEPTH:
                raise ValueError(f"nesting deeper than {MAX_DEPTH}")
            names = self._field_names()
            fields = [getattr(self, name) for name in names]
            if any(_has_encoding(f) for f in fields):
                cached = _array_header(len(fields)) + b"".join(_encode_at(f, depth + 1) for f in fields)
            else:
                cached = msgpack.packb(_to_wire(self, depth), use_bin_type=True)
            self.__dict__["_encoding"] = cached  # the instance dict: frozen dataclasses refuse setattr
        return cached

    @classmethod
    def decode(cls: type[S], data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> S:
        """Decode canonical bytes into ``cls``. Raises ``DecodeError``."""
        return cls.from_value(decode_value(data, max_size=max_size))

    @classmethod
    def from_value(cls: type[S], value: Value) -> S:
        """Build ``cls`` from an already decoded plain value. Raises ``DecodeError``."""
        conv = cls.__dict__.get("_decoder")
        if conv is None:
            conv = _struct_converter(cls)
            cls._decoder = conv
        result: S = conv(value)
        return result


def _converter(annotation: Any) -> _Conv:
    if annotation is Any:
        return lambda v: v
    supertype = getattr(annotation, "__supertype__", None)
    if supertype is not None:  # NewType
        base = _converter(supertype)
        length = FIXED_LENGTHS.get(annotation)
        if length is None:
            return base
        name = annotation.__name__

        def fixed(v: Any) -> Any:
            v = base(v)
            if len(v) != length:
                raise DecodeError(f"{name} must be {length} bytes, got {len(v)}")
            return v

        return fixed
    if annotation in (int, bytes, str, bool):
        expected = annotation

        def scalar(v: Any) -> Any:
            if type(v) is not expected:
                raise DecodeError(f"expected {expected.__name__}, got {type(v).__name__}")
            return v

        return scalar
    origin = get_origin(annotation)
    if origin is tuple:
        args = get_args(annotation)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, not {annotation}")
        item = _converter(args[0])

        def seq(v: Any) -> Any:
            if type(v) is not tuple:
                raise DecodeError(f"expected an array, got {type(v).__name__}")
            return tuple(item(x) for x in v)

        return seq
    if origin in (typing.Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"only X | None unions are supported, not {annotation}")
        inner = _converter(members[0])
        return lambda v: None if v is None else inner(v)
    if isinstance(annotation, type) and issubclass(annotation, Struct):
        return annotation.from_value
    raise TypeError(f"no canonical codec for {annotation!r}")


def _struct_converter(cls: type[S]) -> Callable[[Any], S]:
    """The decoder of ``cls``: a function generated for its fields, as ``dataclasses`` generates
    ``__init__``, so that the hot paths (a transaction, a block of them) run without a call per field.

    Scalar fields (``int``, ``bytes``, ``str``, ``bool``, their NewTypes, fixed-length ``Hash32`` and
    ``Address``) are checked inline; arrays of structs build their elements with the element's own
    decoder; every other field goes through ``_converter``. Errors and their messages are those of
    ``_converter``, prefixed with the struct's name. When the class defines no ``__post_init__``, the
    instance is built by filling its ``__dict__`` (what the frozen dataclass ``__init__`` does, without
    one ``object.__setattr__`` per field).
    """
    hints = get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    n = len(fields)
    name = cls.__name__
    env: dict[str, Any] = {"DecodeError": DecodeError, "cls": cls, "new": object.__new__, "tuple": tuple,
                           "type": type, "len": len}
    body: list[str] = []
    for i, f in enumerate(fields):
        body.extend(f"        {line}" for line in _field_source(i, hints[f.name], env))
    values = ", ".join(f"x{i}" for i in range(n))
    if "__post_init__" in dir(cls) or any(not f.init for f in fields):
        build = f"        return cls({values})"
    else:
        items = ", ".join(f"{f.name!r}: x{i}" for i, f in enumerate(fields))
        build = f"        obj = new(cls)\n        obj.__dict__.update({{{items}}})\n        return obj"
    source = "\n".join([
        "def convert(v):",
        f"    if type(v) is not tuple or len(v) != {n}:",
        f"        raise DecodeError({f'{name} is an array of {n} fields'!r})",
        "    try:",
        *body,
        build,
        "    except DecodeError as err:",
        f"        raise DecodeError({name!r} + ': ' + str(err)) from None",
        "    except (ValueError, TypeError) as err:  # raised by a type's own __post_init__ checks",
        f"        raise DecodeError({name!r} + ': ' + str(err)) from None",
    ])
    exec(source, env)  # noqa: S102 - source built above from the class's own field types only
    convert: Callable[[Any], S] = env["convert"]
    return convert


def _field_source(i: int, annotation: Any, env: dict[str, Any]) -> list[str]:
    """Source lines that check field ``i`` of ``v`` against ``annotation`` and leave it in ``x<i>``."""
    base, length, fixed = annotation, None, ""
    while getattr(base, "__supertype__", None) is not None:  # NewType (the outermost fixed length counts)
        if length is None and base in FIXED_LENGTHS:
            length, fixed = FIXED_LENGTHS[base], base.__name__
        base = base.__supertype__
    if base in (int, bytes, str, bool):
        t = base.__name__
        lines = [f"x{i} = v[{i}]",
                 f"if type(x{i}) is not {t}:",
                 f"    raise DecodeError('expected {t}, got ' + type(x{i}).__name__)"]
        if length is not None:
            lines += [f"if len(x{i}) != {length}:",
                      f"    raise DecodeError('{fixed} must be {length} bytes, got ' + str(len(x{i})))"]
        return lines
    if get_origin(annotation) is tuple:
        args = get_args(annotation)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if isinstance(item, type) and issubclass(item, Struct):
            env[f"e{i}"] = item.from_value
            return [f"x{i} = v[{i}]",
                    f"if type(x{i}) is not tuple:",
                    f"    raise DecodeError('expected an array, got ' + type(x{i}).__name__)",
                    f"x{i} = tuple([e{i}(y) for y in x{i}])"]
    env[f"c{i}"] = _converter(annotation)
    return [f"x{i} = c{i}(v[{i}])"]
