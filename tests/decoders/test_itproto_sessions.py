"""Remote access, FTP with its data connections, TLS and HTTP identification."""

from __future__ import annotations

import struct

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from agent.decoders.expect import MAX_EXPECTED, Expectations
from agent.flows import Flow
from tests import factory
from tests.decoders import itproto_traffic as t


def test_ssh_banners_on_any_port_and_sftp_is_not_claimed() -> None:
    segments = [
        (False, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
        (True, b"SSH-2.0-libssh2_1.10.0\r\n"),
        (True, bytes(300)),
        (False, bytes(900)),
    ]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=2222))
    assert flows[0].app_proto == "ssh" and flows[0].app is None
    assert events[0]["ssh"] == {
        "server": {"proto_version": "2.0", "software_version": "OpenSSH_9.2p1"},
        "client": {"proto_version": "2.0", "software_version": "libssh2_1.10.0"},
    }
    assert events[0]["flow"]["category"] == "remote_access"


def rdp_request(protocols: int, cookie: bytes = b"Cookie: mstshash=operator\r\n") -> bytes:
    neg = struct.pack("<BBHI", 1, 0, 8, protocols)
    x224 = bytes([6 + len(cookie) + len(neg), 0xE0, 0, 0, 0, 0, 0]) + cookie + neg
    return struct.pack("!BBH", 3, 0, 4 + len(x224)) + x224


def rdp_confirm(protocol: int) -> bytes:
    neg = struct.pack("<BBHI", 2, 0x1F, 8, protocol)
    x224 = bytes([6 + len(neg), 0xD0, 0, 0, 0x12, 0x34, 0]) + neg
    return struct.pack("!BBH", 3, 0, 4 + len(x224)) + x224


def test_rdp_negotiation_without_keeping_the_cookie() -> None:
    flows, events, _ = t.run(
        factory.tcp_stream([(True, rdp_request(0x0B)), (False, rdp_confirm(2))], dport=3389)
    )
    assert flows[0].app_proto == "rdp"
    assert events[0]["rdp"] == {
        "cookie": True,
        "requested_protocols": ["tls", "hybrid", "hybrid_ex"],
        "selected_protocol": "hybrid",
    }
    assert "operator" not in str(events[0])


def test_rdp_on_another_port_needs_its_negotiation_and_s7_on_102_stays_s7() -> None:
    flows, _, _ = t.run(factory.tcp_stream([(True, rdp_request(1, cookie=b""))], dport=13389))
    assert flows[0].app_proto == "rdp"
    # An S7comm COTP connection request (TSAP parameters) is not RDP.
    s7_cr = bytes.fromhex("0300001611e00000000100c0010ac1020100c2020102")
    flows, _, _ = t.run(factory.tcp_stream([(True, s7_cr)], dport=13389))
    assert flows[0].app_proto != "rdp"


def test_vnc_and_telnet() -> None:
    vnc = [(False, b"RFB 003.008\n"), (True, b"RFB 003.008\n"), (False, b"\x01\x02")]
    telnet = [(False, b"\xff\xfd\x18\xff\xfd\x20"), (True, b"\xff\xfb\x18")]
    flows, events, _ = t.run(
        factory.tcp_stream(vnc, dport=5900) + factory.tcp_stream(telnet, sport=40001, dport=23)
    )
    by_port = {e["dest_port"]: e for e in events}
    assert by_port[5900]["vnc"] == {"server_version": "003.008", "client_version": "003.008"}
    assert by_port[23]["telnet"] == {"negotiation": True}
    assert {f.app_proto for f in flows} == {"vnc", "telnet"}


def test_ftp_passive_and_active_data_connections_are_named_on_any_port() -> None:
    control = [
        (False, b"220 plant ftp\r\n"),
        (True, b"USER backup\r\n"),
        (False, b"331 ok\r\n"),
        (True, b"PASS secret\r\n"),
        (False, b"230 in\r\n"),
        (True, b"PASV\r\n"),
        (False, b"227 Entering Passive Mode (10,0,0,99,195,80).\r\n"),  # address differs (NAT)
        (True, b"RETR plant.csv\r\n"),
        (True, b"EPSV\r\n"),
        (False, b"229 Entering Extended Passive Mode (|||50001|)\r\n"),
        (True, b"STOR up.bin\r\n"),
        (True, b"PORT 192,0,2,10,156,64\r\n"),
        (True, b"LIST\r\n"),
    ]
    passive = factory.tcp_stream([(False, b"a,b,c\n" * 100)], sport=40010, dport=50000)
    epsv = factory.tcp_stream([(True, bytes(3000))], sport=40011, dport=50001)
    # Active mode: the server connects from port 20 to the client's announced port 40000.
    active = factory.tcp_stream(
        [(False, b"listing\r\n")], client=factory.SERVER, server=factory.CLIENT, sport=20, dport=40000
    )
    unrelated = factory.tcp_stream([(True, b"\x01\x02")], sport=40012, dport=50002)
    flows, events, pipeline = t.run(
        factory.tcp_stream(control, dport=21) + passive + epsv + active + unrelated
    )
    names = {(f.sport, f.dport): f.app_proto for f in flows}
    assert names[(40010, 50000)] == names[(40011, 50001)] == names[(20, 40000)] == "ftp-data"
    assert names[(40012, 50002)] in ("", "unknown") and names[(40000, 21)] == "ftp"
    ftp = next(e["ftp"] for e in events if e["dest_port"] == 21)
    assert ftp["data_connections"] == 3
    assert ftp["commands"] == {
        "USER": 1,
        "PASS": 1,
        "PASV": 1,
        "RETR": 1,
        "EPSV": 1,
        "STOR": 1,
        "PORT": 1,
        "LIST": 1,
    }
    assert "secret" not in str(events)
    assert pipeline.registry.expected.claimed == 3 and not pipeline.registry.expected.entries
    data_event = next(e for e in events if e["dest_port"] == 50000)
    assert data_event["flow"]["category"] == "file_transfer"


def test_expectations_are_bounded_and_expire() -> None:
    table = Expectations()
    for port in range(MAX_EXPECTED + 10):
        table.expect(6, b"\x0a\0\0\1", b"\x0a\0\0\2", 1024 + port, "ftp-data", 0.0)
    assert len(table.entries) == MAX_EXPECTED and table.evicted == 10

    def flow(dport: int, ts: float) -> Flow:
        return Flow((b"\x0a\0\0\1", b"\x0a\0\0\2", 5555, dport, 6, ()), 1, 4, ts, 1, 0, 60.0)

    assert table.claim(flow(1024, 1.0)) is None  # evicted
    assert table.claim(flow(1024 + 20, 1.0)) == "ftp-data"
    assert table.claim(flow(1024 + 20, 1.0)) is None  # used once
    assert table.claim(flow(1024 + 21, 1000.0)) is None and table.expired == 1


def client_hello(
    sni: str, versions: tuple[int, ...] = (0x0A0A, 0x0304, 0x0303), alpn: tuple[bytes, ...] = (b"h2",)
) -> bytes:
    """RFC 8446 4.1.2 ClientHello with server_name (RFC 6066 3), ALPN and supported_versions."""
    name = sni.encode()
    server_name = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    protocols = b"".join(bytes([len(p)]) + p for p in alpn)
    alpn_body = struct.pack("!H", len(protocols)) + protocols
    supported = bytes([2 * len(versions)]) + b"".join(struct.pack("!H", v) for v in versions)
    extensions = b"".join(
        struct.pack("!HH", kind, len(body)) + body
        for kind, body in ((0, server_name), (16, alpn_body), (43, supported))
    )
    body = (
        struct.pack("!H", 0x0303)
        + bytes(32)
        + b"\x20"
        + bytes(32)
        + struct.pack("!HHH", 4, 0x1301, 0x1302)
        + b"\x01\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = bytes([1]) + len(body).to_bytes(3, "big") + body
    return bytes([0x16, 3, 1]) + struct.pack("!H", len(handshake)) + handshake


def server_hello(version: int = 0x0304) -> bytes:
    supported = struct.pack("!HHH", 43, 2, version)
    body = (
        struct.pack("!H", 0x0303)
        + bytes(32)
        + b"\x00"
        + struct.pack("!HB", 0x1301, 0)
        + struct.pack("!H", len(supported))
        + supported
    )
    handshake = bytes([2]) + len(body).to_bytes(3, "big") + body
    return bytes([0x16, 3, 3]) + struct.pack("!H", len(handshake)) + handshake


def test_tls_sni_version_and_alpn_with_the_hello_split_over_segments() -> None:
    hello = client_hello("historian.plant.example")
    segments = [
        (True, hello[:40]),
        (True, hello[40:]),
        (False, server_hello()),
        (True, b"\x17\x03\x03" + bytes(100)),
    ]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=443))
    assert flows[0].app_proto == "tls" and flows[0].app is None
    assert events[0]["tls"] == {
        "sni": "historian.plant.example",
        "alpn": ["h2"],
        "client_version": "TLSv1.3",
        "version": "TLSv1.3",
    }
    assert events[0]["flow"]["category"] == "web"


def test_tls_on_industrial_tls_ports_keeps_the_industrial_name() -> None:
    packets = []
    for i, port in enumerate((8883, 802, 4843, 9443)):
        packets += factory.tcp_stream(
            [(True, client_hello(f"dev{i}")), (False, server_hello(0x0303))], sport=41000 + i, dport=port
        )
    flows, events, _ = t.run(packets)
    names = {f.dport: f.app_proto for f in flows}
    assert names == {8883: "mqtt-tls", 802: "modbus-tls", 4843: "opcua-tls", 9443: "tls"}
    by_port = {e["dest_port"]: e for e in events}
    assert by_port[8883]["tls"]["sni"] == "dev0" and by_port[8883]["tls"]["version"] == "TLSv1.2"
    assert by_port[8883]["flow"]["category"] == by_port[802]["flow"]["category"] == "ot"


def test_http_method_host_status() -> None:
    request = b"POST /api/trend HTTP/1.1\r\nHost: historian.plant:8080\r\nContent-Length: 2\r\n\r\n{}"
    flows, events, _ = t.run(
        factory.tcp_stream([(True, request), (False, b"HTTP/1.1 201 Created\r\n\r\n")], dport=8000)
    )
    assert flows[0].app_proto == "http"
    assert events[0]["http"] == {"method": "POST", "host": "historian.plant:8080", "status": 201}


def test_a_capture_starting_mid_stream_identifies_from_the_server_side() -> None:
    # No handshake and only the server's half: TLS still recognised from its ServerHello.
    pkt = (
        factory.eth()
        / IP(src=factory.SERVER, dst=factory.CLIENT)
        / TCP(sport=443, dport=40000, flags="PA")
        / Raw(server_hello())
    )
    flows, events, _ = t.run([pkt])
    assert flows[0].app_proto == "tls" and events[0]["tls"] == {"version": "TLSv1.3"}
