"""Types of the compiled core ``state/_jmt_core.c`` (see there and ``state.jmt``)."""

from collections.abc import Callable, Mapping

_Ref = tuple[bytes, bytes, bytes | None]

def prepare(
    updates: Mapping[bytes, bytes | None],
    root: _Ref | None,
    version: bytes,
    cache: dict[bytes, bytes],
    latest: Callable[[bytes, bytes], bytes],
    /,
) -> tuple[_Ref | None, dict[bytes, bytes], list[tuple[bytes, bytes | None]], bytes, list[bytes]]: ...
def sha3_256(data: bytes, /) -> bytes: ...
def set_simd(enabled: bool, /) -> bool: ...
