import ipaddress

from communityid import CommunityID, FlowTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.community_id import community_id

REFERENCE = CommunityID()


def reference(proto: int, saddr: bytes, daddr: bytes, sport: int, dport: int) -> str:
    if proto in (6, 17, 132, 1, 58):
        return str(REFERENCE.calc(FlowTuple(proto, saddr, daddr, sport, dport)))
    return str(REFERENCE.calc(FlowTuple(proto, saddr, daddr)))


def test_spec_vectors() -> None:
    a, b = ipaddress.ip_address("128.232.110.120").packed, ipaddress.ip_address("66.35.250.204").packed
    assert community_id(6, a, b, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert community_id(6, b, a, 80, 34855) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="  # either direction


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([1, 6, 17, 47, 58, 132]),
    st.one_of(st.tuples(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4)),
              st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))),
    st.integers(0, 65535),
    st.integers(0, 65535),
)  # fmt: skip
def test_matches_the_reference_implementation(
    proto: int, addrs: tuple[bytes, bytes], sport: int, dport: int
) -> None:
    if proto in (1, 58):
        sport, dport = sport % 256, dport % 256
    saddr, daddr = addrs
    assert community_id(proto, saddr, daddr, sport, dport) == reference(proto, saddr, daddr, sport, dport)


def test_icmp_request_and_reply_share_an_id() -> None:
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    assert community_id(1, a, b, 8, 0) == community_id(1, b, a, 0, 0)
    assert community_id(58, a * 4, b * 4, 128, 0) == community_id(58, b * 4, a * 4, 129, 0)
