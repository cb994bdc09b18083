"""Sampled Values decoder: savPdu and ASDU fields, sample-count gaps, strict BER, random input."""

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from tests import factory
from tests.decoders.l2frames import PUBLISHER, SV_GROUP, sv, sv_asdu


def test_sv_fields_of_a_tagged_stream() -> None:
    messages, anomalies, _ = factory.decode([sv([100])])
    (msg,) = messages
    assert not anomalies and msg.flow.vlan == (1,)
    assert (msg.protocol, msg.operation, msg.function) == ("sv", "io", 0x4000)
    f = msg.fields
    assert (f["sv_id"], f["smp_cnt"], f["conf_rev"], f["smp_synch"], f["no_asdu"]) == ("MU01", 100, 1, 2, 1)
    assert f["asdus"][0]["seq_data_len"] == 64


def test_several_asdus_per_frame_and_sample_gaps() -> None:
    frames = [sv([0, 1, 2, 3]), sv([4, 5, 7, 8]), sv([12, 13, 14, 15]), sv([0, 1, 2, 3])]
    messages, anomalies, _ = factory.decode(frames, step=0.001)
    assert not anomalies
    assert [m.fields["no_asdu"] for m in messages] == [4, 4, 4, 4]
    assert messages[1].fields["asdus"][2]["smp_gap"] == 1 and messages[1].fields["smp_gap"] == 0
    assert messages[2].fields["smp_gap"] == 3 and messages[2].fields["interval_s"] == 0.001
    assert "smp_gap" not in messages[3].fields  # smpCnt wrapped at the sample rate: not a gap


def test_asdu_count_must_match_no_asdu() -> None:
    messages, anomalies, _ = factory.decode([sv([1, 2], no_asdu=3)])
    assert not messages and anomalies[0].fields["anomaly"]["event"] == "bad_count"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_sv_never_raises(data: st.DataObject) -> None:
    good = bytearray(bytes(sv([1, 2]).payload.payload))
    for _ in range(data.draw(st.integers(1, 4))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(good)))
    frame = Ether(src=PUBLISHER, dst=SV_GROUP) / Dot1Q(vlan=1, type=0x88BA) / Raw(bytes(good[:cut]))
    factory.decode([frame])


def test_long_form_lengths_decode_like_short_ones() -> None:
    from agent.decoders.sv import _asdu

    short = bytes(sv_asdu("MU07", 513))
    elements, pos, long_form = short[2:], 0, b""
    while pos < len(elements):  # re-encode every element's length in the long form (0x81 n)
        tag, size = elements[pos], elements[pos + 1]
        long_form += bytes([tag, 0x81, size]) + elements[pos + 2 : pos + 2 + size]
        pos += 2 + size
    assert _asdu(long_form, 0, len(long_form)) == _asdu(short, 2, len(short))
    assert _asdu(long_form, 0, len(long_form))["smp_cnt"] == 513
