"""Frame codec: round trips through any chunking, limits enforced from the header alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p.exceptions import FrameTooLarge, RemoteProtocolError
from p2p.framing import DEFAULT_MAX_FRAME, HEADER_LEN, FrameDecoder, encode_frame

payloads = st.lists(st.binary(max_size=300), max_size=20)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``data`` at the given cut points (any ints; reduced modulo len + 1)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def test_default_limit_is_16_mib() -> None:
    assert DEFAULT_MAX_FRAME == 16 * 1024 * 1024


def test_encode_frame_layout() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_encode_frame_refuses_oversize_payload_as_local_error() -> None:
    with pytest.raises(ValueError, match="over the frame limit"):
        encode_frame(b"x" * 11, max_size=10)


@given(payloads, st.lists(st.integers(min_value=0), max_size=40))
def test_round_trip_through_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p, max_size=300) for p in frames)
    decoder = FrameDecoder(max_size=300)
    out: list[bytes] = []
    for chunk in _chunks(stream, cuts):
        out.extend(decoder.feed(chunk))
    assert out == frames
    assert decoder.buffered == 0


@given(payloads, st.lists(st.integers(min_value=0), max_size=40))
def test_next_frame_pull_api_matches_feed(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in frames)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in _chunks(stream, cuts):
        decoder.receive_data(chunk)
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == frames


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=20), st.integers(0, 64))
def test_arbitrary_bytes_give_frames_or_frame_too_large(data: bytes, cuts: list[int], limit: int) -> None:
    decoder = FrameDecoder(max_size=limit)
    error: FrameTooLarge | None = None
    try:
        for chunk in _chunks(data, cuts):
            for frame in decoder.feed(chunk):
                assert len(frame) <= limit
    except FrameTooLarge as err:  # the only error arbitrary bytes may raise
        error = err
    if error is not None:
        assert error.size > error.limit == limit
        with pytest.raises(FrameTooLarge):  # the stream cannot be resynchronised
            decoder.feed(b"")


def test_frame_too_large_is_a_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        FrameDecoder(max_size=1).feed(b"\x00\x00\x00\x02")


@given(st.integers(min_value=65, max_value=2**32 - 1), st.binary(max_size=100))
def test_oversize_header_refused_before_the_body(size: int, good: bytes) -> None:
    decoder = FrameDecoder(max_size=64)
    header = size.to_bytes(HEADER_LEN, "big")
    prefix = encode_frame(good[:64], max_size=64)
    assert decoder.feed(prefix) == [good[:64]]
    # The header arrives byte by byte: nothing is refused until it is complete, then at once.
    for byte in header[:-1]:
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header[-1:])
    assert (info.value.size, info.value.limit) == (size, 64)
    assert decoder.buffered == 0  # nothing of the stream is kept


def test_max_size_can_be_raised_between_frames() -> None:
    big = b"y" * 100
    decoder = FrameDecoder(max_size=10)
    decoder.receive_data(encode_frame(b"small") + encode_frame(big))
    assert decoder.next_frame() == b"small"
    decoder.max_size = 1000
    assert decoder.next_frame() == big
    assert decoder.next_frame() is None


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5])
def test_limit_must_fit_the_header(bad: object) -> None:
    with pytest.raises(ValueError, match="max_size"):
        FrameDecoder(max_size=bad)  # type: ignore[arg-type]
