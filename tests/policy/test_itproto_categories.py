"""Category rules (``category: backup``, ``web``, ...) judge flows as the IT identification names them."""

from __future__ import annotations

from typing import Any

from agent.pipeline import EVENTS_DEFAULT, Pipeline, PipelineConfig
from agent.policy.engine import CompiledPolicy
from agent.policy.loader import load_policy_text
from tests import factory
from tests.decoders import itproto_traffic as t
from tests.decoders.test_itproto_sessions import client_hello, server_hello

POLICY = """
version: 1
system: {name: Category test}
defaults: {intra_zone: allow, unknown_hosts: ignore}
zones:
  - {id: cell, purdue_level: 1, networks: [10.10.10.0/24]}
  - {id: backup, purdue_level: 3, networks: [10.10.30.0/24]}
  - {id: enterprise, purdue_level: 4, networks: [10.50.0.0/16]}
conduits:
  - id: cell-backup
    zones: [cell, backup]
    flows:
      - {id: nightly-backup, initiator: cell, responder: backup, category: backup}
      - {id: exports, initiator: cell, responder: backup, category: file_transfer}
  - id: enterprise-cell
    zones: [enterprise, cell]
    flows:
      - {id: dashboards, initiator: enterprise, responder: cell, category: web}
"""
HISTORIAN, BACKUP, LAPTOP = "10.10.10.50", "10.10.30.10", "10.50.1.9"


def judge(packets: list[Any]) -> list[dict[str, Any]]:
    policy, problems = load_policy_text(POLICY, "categories.yaml")
    assert policy is not None, problems
    events: list[dict[str, Any]] = []

    class Sink:
        name = "memory"

        def emit(self, event: Any) -> None:
            if event.event_type == "alert":
                events.append(event.fields)

        def flush(self) -> None: ...
        def close(self) -> None: ...

    pipeline = Pipeline(PipelineConfig(events=EVENTS_DEFAULT), sinks=[Sink()], policy=CompiledPolicy(policy))
    pipeline.run(factory.ListSource(packets))
    return events


def test_backup_protocols_to_the_backup_zone_are_allowed_by_the_category() -> None:
    smb = factory.tcp_stream([(True, t.nbss(t.smb2_write(1, b"x" * 2000)))], HISTORIAN, BACKUP, 40001, 445)
    greetings = [(False, t.RSYNC_SERVER_GREETING), (True, t.RSYNC_CLIENT_GREETING + b"plant\n")]
    rsync = factory.tcp_stream(greetings, HISTORIAN, BACKUP, 40002, 873)
    ndmp = factory.tcp_stream([(False, t.ndmp(1, 0, 0x502))], HISTORIAN, BACKUP, 40003, 10000)
    veeam = factory.tcp_stream([(True, b"\x01\x02\x03")], HISTORIAN, BACKUP, 40004, 6162)
    assert judge(smb + rsync + ndmp + veeam) == []


def test_ftp_data_on_a_random_port_is_a_file_transfer_not_a_violation() -> None:
    control = [
        (False, b"220 backup\r\n"),
        (True, b"PASV\r\n"),
        (False, b"227 Entering Passive Mode (10,10,30,10,200,1).\r\n"),
    ]
    data = factory.tcp_stream([(True, b"archive" * 300)], HISTORIAN, BACKUP, 40011, 200 * 256 + 1)
    stray = factory.tcp_stream([(True, b"archive")], HISTORIAN, BACKUP, 40012, 200 * 256 + 2)
    alerts = judge(factory.tcp_stream(control, HISTORIAN, BACKUP, 40010, 21) + data + stray)
    # Only the connection nobody announced is a violation.
    assert [(a["dest_port"], a["app_proto"], a["alert"]["rule"]) for a in alerts] == [
        (200 * 256 + 2, "unknown", "protocol_not_allowed")
    ]


def test_remote_access_and_tls_outside_the_web_category() -> None:
    web = factory.tcp_stream(
        [(True, client_hello("hist")), (False, server_hello())], LAPTOP, HISTORIAN, 40020, 443
    )
    ssh = factory.tcp_stream([(False, b"SSH-2.0-OpenSSH_9.2\r\n"), (True, b"SSH-2.0-PuTTY\r\n")],
                             LAPTOP, HISTORIAN, 40021, 22)  # fmt: skip
    mqtt_tls = factory.tcp_stream([(True, client_hello("broker"))], LAPTOP, HISTORIAN, 40022, 8883)
    alerts = judge(web + ssh + mqtt_tls)
    assert sorted((a["dest_port"], a["app_proto"], a["alert"]["rule"]) for a in alerts) == [
        (22, "ssh", "protocol_not_allowed"),
        (8883, "mqtt-tls", "protocol_not_allowed"),  # an industrial protocol over TLS is not "web"
    ]
