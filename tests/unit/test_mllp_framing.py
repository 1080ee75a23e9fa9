"""MLLP framing on bytes alone: no socket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrations.hl7.mllp import END_BLOCK, START_BLOCK, FrameReader, FrameTooLarge, wrap

MSG_A = b"MSH|^~\\&|RIS|H|RS|R|20261124||ORM^O01|A1|P|2.3.1\rPID|1||123"
MSG_B = b"MSH|^~\\&|RIS|H|RS|R|20261124||ORM^O01|B2|P|2.5.1\rPID|1||456"


def test_one_frame() -> None:
    assert FrameReader(1024).feed(wrap(MSG_A)) == [MSG_A]


def test_two_frames_joined_in_one_read() -> None:
    assert FrameReader(1024).feed(wrap(MSG_A) + wrap(MSG_B)) == [MSG_A, MSG_B]


def test_frame_split_byte_by_byte_including_the_end_mark() -> None:
    reader = FrameReader(1024)
    out: list[bytes] = []
    for byte in wrap(MSG_A) + wrap(MSG_B):
        out += reader.feed(bytes([byte]))
    assert out == [MSG_A, MSG_B]
    assert reader.pending == 0 and not reader.in_frame


def test_end_mark_split_across_reads() -> None:
    reader = FrameReader(1024)
    framed = wrap(MSG_A)
    assert reader.feed(framed[:-1]) == []
    assert reader.feed(framed[-1:] + wrap(MSG_B)[:5]) == [MSG_A]
    assert reader.feed(wrap(MSG_B)[5:]) == [MSG_B]


def test_junk_before_the_start_mark_is_skipped_and_counted() -> None:
    reader = FrameReader(1024)
    assert reader.feed(b"\r\nGET / HTTP/1.0\r\n" + wrap(MSG_A)) == [MSG_A]
    assert reader.discarded == len(b"\r\nGET / HTTP/1.0\r\n")


def test_bytes_after_an_end_mark_are_kept_for_the_next_frame() -> None:
    reader = FrameReader(1024)
    assert reader.feed(wrap(MSG_A) + START_BLOCK + MSG_B[:10]) == [MSG_A]
    assert reader.in_frame and reader.pending == 10
    assert reader.feed(MSG_B[10:] + END_BLOCK) == [MSG_B]


def test_a_new_start_mark_abandons_a_truncated_frame() -> None:
    reader = FrameReader(1024)
    assert reader.feed(START_BLOCK + MSG_A[:20] + wrap(MSG_B)) == [MSG_B]
    assert reader.discarded == 20


def test_a_lone_fs_without_cr_is_payload_not_an_end() -> None:
    payload = MSG_A + b"\x1cX"
    assert FrameReader(1024).feed(wrap(payload)) == [payload]


def test_oversize_frame_raises_before_its_end_arrives() -> None:
    reader = FrameReader(100)
    with pytest.raises(FrameTooLarge):
        reader.feed(START_BLOCK + b"x" * 101)


def test_oversize_frame_in_one_read_raises() -> None:
    with pytest.raises(FrameTooLarge):
        FrameReader(100).feed(wrap(b"x" * 101))


def test_frame_of_exactly_the_limit_passes() -> None:
    assert FrameReader(100).feed(wrap(b"x" * 100)) == [b"x" * 100]


@given(
    payloads=st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")),
                      max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_any_split_of_any_frames_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(wrap(p) for p in payloads)
    points = sorted({0, len(stream), *[c % (len(stream) + 1) for c in cuts]})
    reader = FrameReader(10_000)
    out: list[bytes] = []
    for a, b in zip(points, points[1:], strict=False):
        out += reader.feed(stream[a:b])
    assert out == payloads
