from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Packet as ScapyPacket

from agent import flows as fl
from agent.dissect import IP as STATUS_IP
from agent.dissect import Dissector, Packet, format_ip
from agent.flows import Flow, FlowConfig, FlowTable
from tests import factory


class Recorder:
    def __init__(self) -> None:
        self.ended: list[tuple[Flow, str]] = []

    def __call__(self, flow: Flow, reason: str) -> None:
        self.ended.append((flow, reason))


def feed(table: FlowTable, packets: list[ScapyPacket], start: float = 100.0, step: float = 0.01,
         times: list[float] | None = None) -> list[tuple[Flow, bool]]:  # fmt: skip
    dissector = Dissector()
    pkt = Packet()
    out = []
    times = times or [start + i * step for i in range(len(packets))]
    for i, (p, ts) in enumerate(zip(packets, times, strict=True)):
        data = bytes(p)
        assert dissector.dissect(pkt, data, 1) == STATUS_IP
        if ts >= table.next_sweep:
            table.expire(ts)
        out.append(table.update(pkt, ts, len(data), i + 1, 0))
    return out


def test_handshake_direction_counts_and_close() -> None:
    rec = Recorder()
    table = FlowTable(FlowConfig(), rec)
    session = factory.tcp_session()
    results = feed(table, session)
    flow = results[0][0]
    assert all(r[0] is flow for r in results)
    assert [r[1] for r in results[:3]] == [True, False, True]
    assert format_ip(flow.src) == factory.CLIENT
    assert (flow.sport, flow.dport) == (40000, 502)
    assert flow.pkts_toserver == 5 and flow.pkts_toclient == 3
    assert flow.bytes_toserver == sum(
        len(bytes(p)) for p, (_, up) in zip(session, results, strict=True) if up
    )
    assert flow.tcp_state == fl.TCP_CLOSED and flow.state == "closed"
    assert flow.app_proto == "modbus"
    assert flow.community_id.startswith("1:")
    # The closed flow ends after the short closed timeout, not the long established one.
    table.expire(results and 100.0 + 8 * 0.01 + FlowConfig().tcp_closed_timeout + 0.1)
    assert [r for _, r in rec.ended] == ["timeout"]
    assert table.timed_out == 1 and len(table) == 0


def test_initiator_is_syn_sender_even_when_syn_ack_is_seen_first() -> None:
    table = FlowTable(FlowConfig(), Recorder())
    session = factory.tcp_session()
    flow, to_server = feed(table, session[1:])[0]  # capture starts at the SYN-ACK
    assert not to_server
    assert flow.dport == 502 and flow.sport == 40000


def test_midstream_first_packet_sender_is_initiator() -> None:
    table = FlowTable(FlowConfig(), Recorder())
    flow, to_server = feed(table, factory.tcp_session()[3:])[0]
    assert to_server and flow.tcp_state >= fl.TCP_ESTABLISHED


def test_udp_idle_timeout_and_shutdown_flush() -> None:
    rec = Recorder()
    table = FlowTable(FlowConfig(udp_timeout=5.0), rec)
    feed(table, [factory.udp(sport=1), factory.udp(sport=2)], times=[0.0, 4.0])
    table.expire(5.5)
    assert [(f.sport, r) for f, r in rec.ended] == [(1, "timeout")]
    table.flush()
    assert [(f.sport, r) for f, r in rec.ended] == [(1, "timeout"), (2, "shutdown")]
    assert table.ended == 2


def test_table_is_bounded_and_evicts_least_recently_seen() -> None:
    rec = Recorder()
    table = FlowTable(FlowConfig(max_flows=3), rec)
    packets = [factory.udp(sport=p) for p in (1, 2, 3)] + [factory.udp(sport=1)] + [factory.udp(sport=4)]
    feed(table, packets)
    assert len(table) == 3
    assert table.evicted == 1
    assert [(f.sport, r) for f, r in rec.ended] == [(2, "evicted")]


def test_active_timeout_reports_and_continues() -> None:
    rec = Recorder()
    table = FlowTable(FlowConfig(active_timeout=10.0, udp_timeout=100.0), rec)
    results = feed(table, [factory.udp(), factory.udp(), factory.udp()], times=[0.0, 5.0, 11.0])
    first, second = results[0][0], results[2][0]
    assert first is not second
    assert rec.ended == [(first, "active_timeout")]
    assert first.pkts_toserver == 2 and second.pkts_toserver == 1
    assert second.community_id == first.community_id and second.flow_id != first.flow_id


def test_port_reuse_after_close_starts_new_flow() -> None:
    rec = Recorder()
    table = FlowTable(FlowConfig(), rec)
    session = factory.tcp_session()
    again = session[0].copy()
    again[TCP].seq = 999_999  # a new initial sequence number: a new connection on the same ports
    feed(table, [*session, again], step=0.01)
    assert [r for _, r in rec.ended] == ["port_reuse"]
    assert len(table) == 1


def test_vlan_separates_flows_and_icmp_pairs_hosts() -> None:
    table = FlowTable(FlowConfig(), Recorder())
    a = factory.eth() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2)
    from scapy.layers.l2 import Dot1Q

    b = factory.eth() / Dot1Q(vlan=7) / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1, dport=2)
    feed(table, [a, b, factory.icmp_echo(), factory.icmp_echo(reply=True)])
    assert len(table) == 3
    icmp = next(f for f in table.flows() if f.proto == 1)
    assert icmp.pkts_toserver == 1 and icmp.pkts_toclient == 1


def test_community_id_matches_spec_vector() -> None:
    # Baseline from the Community ID specification: TCP 128.232.110.120:34855 -> 66.35.250.204:80.
    table = FlowTable(FlowConfig(), Recorder())
    syn = (
        factory.eth() / IP(src="128.232.110.120", dst="66.35.250.204") / TCP(sport=34855, dport=80, flags="S")
    )
    flow, _ = feed(table, [syn])[0]
    assert flow.community_id == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_flow_ids_are_deterministic() -> None:
    ids = []
    for _ in range(2):
        table = FlowTable(FlowConfig(), Recorder())
        feed(table, [*factory.tcp_session(), factory.udp()])
        ids.append(sorted(f.flow_id for f in table.flows()))
    assert ids[0] == ids[1] and all(0 < i < 2**53 for i in ids[0])


def test_retransmitted_syn_after_reset_is_not_a_new_connection() -> None:
    rec = Recorder()
    table = FlowTable(FlowConfig(), rec)
    syn = factory.eth() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=4549, dport=80, flags="S", seq=77)
    rst = factory.eth() / IP(src="192.0.2.2", dst="192.0.2.1") / TCP(sport=80, dport=4549, flags="RA", ack=78)
    feed(table, [syn, rst, syn, rst, syn])
    assert rec.ended == [] and len(table) == 1
    assert table.flows()[0].pkts_toserver == 3


def test_missed_syn_ack_still_becomes_established() -> None:
    table = FlowTable(FlowConfig(), Recorder())
    session = factory.tcp_session(close=False)
    flow, _ = feed(table, [session[0], session[2], session[3]])[0]  # SYN, ACK, data; SYN-ACK not captured
    assert flow.tcp_state == fl.TCP_ESTABLISHED and flow.timeout == FlowConfig().tcp_timeout
