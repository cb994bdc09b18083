"""File and backup transfer identification: SMB, NFS/ONC-RPC, rsync, iSCSI, NDMP (spec-built traffic)."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from agent.decoders.identify import flow_fields
from tests import factory
from tests.decoders import itproto_traffic as t

FILE = bytes(range(256)) * 256  # 64 KiB


def test_smb2_file_copy_counts_commands_and_bytes_and_names_the_dialect() -> None:
    write = t.nbss(t.smb2_write(3, FILE))
    segments = [
        (True, t.nbss(t.smb2(0, 0, bytes(36)))),
        (False, t.nbss(t.smb2_negotiate_response(0x0311))),
        (True, t.nbss(t.smb2_create(2, "backup\\plant.bak"))),
        *[(True, part) for part in t.chunks(write)],  # one 64 KiB WRITE over 45 segments
        (True, t.nbss(t.smb2_read_request(4, 4096))),
        (False, t.nbss(t.smb2_read_response(4, FILE[:4096]))),
    ]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=445))
    (flow,) = flows
    assert flow.app_proto == "smb"
    (event,) = events
    assert event["flow"]["category"] == "file_transfer"
    assert event["smb"] == {
        "version": 3,
        "dialect": "3.1.1",
        "commands": {"negotiate": 1, "create": 1, "write": 1, "read": 1},
        "bytes_written": len(FILE),
        "bytes_read": 4096,
    }


def test_smb2_compound_requests_are_all_counted() -> None:
    first = t.smb2(5, 1, bytes(56) + bytes(8), next_command=128)
    compound = first + t.smb2(6, 2, bytes(24))
    flows, _, _ = t.run(factory.tcp_stream([(True, t.nbss(compound))], dport=445))
    assert flow_fields(flows[0]) == {"smb": {"version": 2, "commands": {"create": 1, "close": 1}}}


def test_smb1_write_andx_bytes_and_an_smb_header_split_across_segments() -> None:
    write = t.nbss(t.smb1_write_andx(b"x" * 3000))
    negotiate = t.nbss(t.smb1(0x72, b"", b"\x02NT LM 0.12\x00"))
    segments = [(True, negotiate[:6]), (True, negotiate[6:]), (True, write[:20]), (True, write[20:])]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=445))
    assert flows[0].app_proto == "smb"
    assert events[0]["smb"] == {"version": 1, "commands": {"negotiate": 1, "write": 1}, "bytes_written": 3000}


def test_smb_on_port_139_after_a_netbios_session_request() -> None:
    request = bytes([0x81, 0, 0, 68]) + bytes(68)
    segments = [(True, request), (False, bytes([0x82, 0, 0, 0])), (True, t.nbss(t.smb2(0, 0, bytes(36))))]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=139))
    assert flows[0].app_proto == "smb" and events[0]["smb"]["commands"] == {"negotiate": 1}


def test_smb_port_without_smb_is_not_called_smb() -> None:
    flows, events, _ = t.run(factory.tcp_stream([(True, b"\x13\x37" * 20)] * 5, dport=445))
    assert flows[0].app_proto == "unknown" and events[0]["flow"]["category"] == "unknown"
    # ... and whatever the payload shows wins over the port.
    flows, _, _ = t.run(factory.tcp_stream([(True, b"GET / HTTP/1.1\r\nHost: historian\r\n\r\n")], dport=445))
    assert flows[0].app_proto == "http"


def test_a_long_smb_transfer_stops_being_looked_at_and_says_its_counts_are_partial() -> None:
    from agent.decoders.smb import SmbIdentifier

    write = t.nbss(t.smb2_write(3, FILE))
    parts = t.chunks(write)
    copies = SmbIdentifier.max_packets // len(parts) + 2
    segments = [(True, part) for _ in range(copies) for part in parts]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=445))
    smb = events[0]["smb"]
    assert smb["partial"] is True
    # Whole WRITEs seen within the budget (the header of each lies in its first segment).
    assert smb["commands"]["write"] == -(-SmbIdentifier.max_packets // len(parts))
    assert flows[0].app is None  # detached: the rest of the transfer cost one attribute test a packet


def test_nfs3_over_udp_counts_read_write_and_bytes() -> None:
    def dgram(from_client: bool, payload: bytes) -> object:
        src, dst, sp, dp = (
            ("10.0.0.1", "10.0.0.2", 800, 2049) if from_client else ("10.0.0.2", "10.0.0.1", 2049, 800)
        )
        return factory.eth() / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / Raw(payload)

    packets = [
        dgram(True, t.nfs3_write(1, b"w" * 1000)),
        dgram(False, t.rpc_reply(1, bytes(8))),
        dgram(True, t.nfs3_read(2, 500)),
        dgram(False, t.nfs3_read_reply(2, b"r" * 500)),
        dgram(True, t.rpc_call(3, 100003, 3, 1, t.NFS_HANDLE)),  # GETATTR
    ]
    flows, events, _ = t.run(packets)
    assert flows[0].app_proto == "nfs"
    assert events[0]["rpc"] == {
        "program": 100003,
        "program_name": "nfs",
        "version": 3,
        "procedures": {"write": 1, "read": 1, "getattr": 1},
        "bytes_written": 1000,
        "bytes_read": 500,
    }
    assert events[0]["flow"]["category"] == "file_transfer"


def test_nfs3_over_tcp_with_record_marking_across_segments() -> None:
    write = t.record(t.nfs3_write(7, FILE[:20000]))
    segments = [(True, part) for part in t.chunks(write)] + [(False, t.record(t.rpc_reply(7, bytes(8))))]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=2049))
    assert flows[0].app_proto == "nfs"
    assert events[0]["rpc"]["procedures"] == {"write": 1} and events[0]["rpc"]["bytes_written"] == 20000


def test_mount_on_a_random_port_is_nfs_and_portmap_is_rpcbind() -> None:
    mount = t.rpc_call(1, 100005, 3, 1, struct_path(b"/export"))
    getport = t.rpc_call(2, 100000, 2, 3, bytes(16))
    packets = [
        factory.udp(sport=700, dport=1048, data=mount),
        factory.udp(sport=701, dport=111, data=getport),
    ]
    flows, events, _ = t.run(packets)
    names = {f.dport: f.app_proto for f in flows}
    assert names == {1048: "nfs", 111: "rpcbind"}
    by_port = {e["dest_port"]: e for e in events}
    assert by_port[1048]["rpc"]["procedures"] == {"mnt": 1}
    assert (
        by_port[111]["rpc"]["program_name"] == "portmap"
        and by_port[111]["flow"]["category"] == "infrastructure"
    )


def struct_path(path: bytes) -> bytes:
    return len(path).to_bytes(4, "big") + path + bytes(-len(path) % 4)


def test_rsync_daemon_session_from_the_protocol_exchange() -> None:
    segments = [
        (False, t.RSYNC_SERVER_GREETING),
        (True, t.RSYNC_CLIENT_GREETING),
        (True, b"plant-backup\n"),
        (False, b"@RSYNCD: AUTHREQD 7Bn5h0uKq9xXjvL6R3Ej5g\n"),
        (True, b"backup a1b2c3d4e5f6a1b2c3d4e5\n"),
        (False, b"@RSYNCD: OK\n"),
        (True, b"--server\0--sender\0-logDtpre.iLsfxCIvu\0.\0plant/\0\0"),
        (False, bytes(range(200))),
    ]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=873))
    assert flows[0].app_proto == "rsync" and flows[0].app is None
    assert events[0]["rsync"] == {
        "server_version": "31.0",
        "client_version": "31.0",
        "module": "plant-backup",
        "auth": True,
        "accepted": True,
    }
    assert events[0]["flow"]["category"] == "file_transfer"


def test_rsync_refused_module_and_listing() -> None:
    listing = [
        (False, t.RSYNC_SERVER_GREETING),
        (True, t.RSYNC_CLIENT_GREETING + b"#list\n"),
        (False, b"plant-backup   \tnightly\n@RSYNCD: EXIT\n"),
    ]
    refused = [
        (False, t.RSYNC_SERVER_GREETING),
        (True, t.RSYNC_CLIENT_GREETING + b"secret\n"),
        (False, b"@ERROR: Unknown module 'secret'\n"),
    ]
    _, events, _ = t.run(
        factory.tcp_stream(listing, dport=873) + factory.tcp_stream(refused, sport=40001, dport=873)
    )
    by_port = {e["src_port"]: e["rsync"] for e in events}
    assert by_port[40000] == {"server_version": "31.0", "client_version": "31.0", "listing": True}
    assert by_port[40001]["module"] == "secret" and by_port[40001]["accepted"] is False


def test_iscsi_login_then_writes_and_reads_with_digests() -> None:
    login = t.iscsi_login_request(
        {
            "InitiatorName": "iqn.2024-01.plant:historian",
            "SessionType": "Normal",
            "TargetName": "iqn.2024-01.plant:backup-lun0",
            "HeaderDigest": "CRC32C,None",
        }
    )
    answer = t.iscsi_login_response({"HeaderDigest": "CRC32C", "DataDigest": "None"})
    digest = b"\xaa\xbb\xcc\xdd"

    def with_digest(pdu: bytes) -> bytes:  # header digest after the 48-byte BHS
        return pdu[:48] + digest + pdu[48:]

    write = with_digest(t.scsi_command(0x2A, write=True, immediate=b"i" * 512, expected=8704))
    out = with_digest(t.data_out(FILE[:8192]))
    read = with_digest(t.scsi_command(0x88, write=False, expected=4096))
    data = with_digest(t.data_in(FILE[:4096]))
    segments = [
        (True, login),
        (False, answer),
        (True, write),
        *[(True, p) for p in t.chunks(out, 1000)],
        (True, read),
        *[(False, p) for p in t.chunks(data, 1460)],
    ]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=3260))
    assert flows[0].app_proto == "iscsi"
    iscsi = events[0]["iscsi"]
    assert iscsi["initiator"] == "iqn.2024-01.plant:historian"
    assert iscsi["target"] == "iqn.2024-01.plant:backup-lun0" and iscsi["session_type"] == "Normal"
    assert iscsi["opcodes"] == {
        "login": 1,
        "login_response": 1,
        "scsi_command": 2,
        "data_out": 1,
        "data_in": 1,
    }
    assert iscsi["scsi"] == {"write": 1, "read": 1}
    assert iscsi["bytes_written"] == 512 + 8192 and iscsi["bytes_read"] == 4096
    assert events[0]["flow"]["category"] == "file_transfer"


def test_ndmp_session_is_backup() -> None:
    segments = [
        (False, t.ndmp(1, 0, 0x502)),  # NOTIFY_CONNECTED
        (True, t.ndmp(1, 0, 0x900, (4).to_bytes(4, "big"))),  # CONNECT_OPEN, version 4
        (False, t.ndmp(2, 1, 0x900, bytes(4))),
        (True, t.ndmp(2, 0, 0x100)),  # CONFIG_GET_HOST_INFO
        (True, t.ndmp(3, 0, 0xF001, bytes(40))),  # a vendor extension: framed, not a loss of sync
        (True, t.ndmp(4, 0, 0x401)),  # DATA_START_BACKUP
    ]
    flows, events, _ = t.run(factory.tcp_stream(segments, dport=10000))
    assert flows[0].app_proto == "ndmp"
    assert events[0]["ndmp"] == {
        "requests": {"notify": 1, "connect": 1, "config": 1, "vendor": 1, "data": 1},
        "version": 4,
    }
    assert events[0]["flow"]["category"] == "backup"


def test_backup_product_ports_name_the_product() -> None:
    flows, events, _ = t.run(factory.tcp_stream([(True, b"\x00\x01opaque")], dport=9102))
    assert flows[0].app_proto == "bacula" and events[0]["flow"]["category"] == "backup"
