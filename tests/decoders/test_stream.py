"""The TCP framer on a toy protocol: 1-byte marker 0xAA, 1-byte total length."""

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decoders.stream import INVALID, NEED_MORE, StreamFramer


def toy_length(buf: bytes, off: int, avail: int) -> int:
    if avail < 2:
        return NEED_MORE
    if buf[off] != 0xAA or buf[off + 1] < 2:
        return INVALID
    return buf[off + 1]


def msg(body: bytes) -> bytes:
    return bytes([0xAA, len(body) + 2]) + body


class Recorder:
    def __init__(self, limit: int = 1000) -> None:
        self.messages: list[bytes] = []
        self.gaps: list[str] = []
        self.framer = StreamFramer(toy_length, self.on_message, self.on_gap, limit)

    def on_message(self, buf: bytes, off: int, n: int, tag: bool) -> None:
        self.messages.append(bytes(buf[off : off + n]))

    def on_gap(self, kind: str, detail: str) -> None:
        self.gaps.append(kind)


def test_in_order_split_and_batched() -> None:
    r = Recorder()
    data = msg(b"one") + msg(b"two") + msg(b"three")
    r.framer.add(100, data[:3])
    r.framer.add(103, data[3:9])
    r.framer.add(109, data[9:])
    assert r.messages == [msg(b"one"), msg(b"two"), msg(b"three")] and not r.gaps


def test_out_of_order_segments_are_reordered() -> None:
    r = Recorder()
    a, b, c = msg(b"a"), msg(b"b"), msg(b"c")
    r.framer.add(0, a)
    r.framer.add(len(a) + len(b), c)  # arrives before b
    assert r.messages == [a]
    r.framer.add(len(a), b)
    assert r.messages == [a, b, c] and not r.gaps


def test_retransmission_is_not_decoded_twice_and_overlap_is_trimmed() -> None:
    r = Recorder()
    a, b = msg(b"a"), msg(b"bb")
    r.framer.add(0, a)
    r.framer.add(0, a)  # pure retransmission
    r.framer.add(1, (a + b)[1:])  # overlapping retransmission carrying b
    assert r.messages == [a, b]


def test_sequence_wraparound() -> None:
    r = Recorder()
    a = msg(b"wrap!")
    start = (1 << 32) - 3
    r.framer.add(start, a[:4])
    r.framer.add((start + 4) % (1 << 32), a[4:] + msg(b"x"))
    assert r.messages == [a, msg(b"x")]


def test_hole_that_never_fills_is_a_gap_then_resync() -> None:
    r = Recorder(limit=64)
    r.framer.add(0, msg(b"first")[:4])  # a message cut short by the hole after it
    seq = 200
    for _ in range(40):  # later segments pile up behind the hole until the bound is hit
        m = b"junk" + msg(b"later")
        r.framer.add(seq, m)
        seq += len(m)
    assert "stream_gap" in r.gaps
    assert msg(b"later") in r.messages  # resynchronised on a valid header after the junk


def test_invalid_header_resyncs() -> None:
    r = Recorder()
    r.framer.add(0, b"\x00\x01" + msg(b"ok"))
    assert r.messages == [msg(b"ok")] and r.gaps == ["bad_header"]


def test_oversize_message_is_bounded() -> None:
    r = Recorder(limit=16)
    r.framer.add(0, bytes([0xAA, 200]) + bytes(10))
    assert r.gaps == ["oversize"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.binary(max_size=200)), max_size=30))
def test_arbitrary_segments_never_raise_and_stay_bounded(segments: list[tuple[int, bytes]]) -> None:
    r = Recorder(limit=512)
    for seq, data in segments:
        r.framer.add(seq, data)
        assert len(r.framer.buf) <= 512
        assert len(r.framer.ooo) <= 33


def test_finish_decodes_what_waits_behind_a_hole_and_reports_a_partial_message() -> None:
    r = Recorder()
    a, b = msg(b"a"), msg(b"bb")
    r.framer.add(0, a)
    r.framer.add(len(a) + 5, b + msg(b"cut")[:3])  # 5 bytes never arrive; the last message is cut
    assert r.messages == [a]
    r.framer.finish()
    assert r.messages == [a, b]
    assert r.gaps == ["stream_gap", "truncated"]
