"""Flow events of identified IT/backup flows: the protocol objects and ``flow.category`` match the schema."""

from __future__ import annotations

import json
from pathlib import Path

from agent.outputs.eve import EveSink
from agent.pipeline import Pipeline, PipelineConfig
from tests import factory
from tests.decoders import itproto_traffic as t
from tests.decoders.test_itproto_sessions import client_hello, server_hello


def test_identified_flow_events_validate_against_the_schema(tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "eve.schema.json").read_text())
    packets = [
        *factory.tcp_stream([(True, t.nbss(t.smb2_write(1, b"x" * 3000)))], sport=40001, dport=445),
        *factory.tcp_stream(
            [(True, client_hello("hist.plant")), (False, server_hello())], sport=40002, dport=443
        ),
        *factory.tcp_stream(
            [(False, t.RSYNC_SERVER_GREETING), (True, t.RSYNC_CLIENT_GREETING + b"m\n")],
            sport=40003,
            dport=873,
        ),
        *factory.tcp_stream(
            [(True, t.iscsi_login_request({"InitiatorName": "iqn.a"}))], sport=40004, dport=3260
        ),
        factory.udp(sport=800, dport=2049, data=t.nfs3_write(1, b"w" * 10)),
        *factory.tcp_session(sport=40005),  # modbus: category ot, no identification object
        factory.udp(sport=40006, dport=40007, data=b"\x00\x01"),  # nothing: category unknown
    ]
    out = tmp_path / "eve.json"
    sink = EveSink(str(out))
    Pipeline(PipelineConfig(), sinks=[sink]).run(factory.ListSource(packets))
    sink.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    flows = {e["dest_port"]: e for e in events if e["event_type"] == "flow"}
    for event in events:
        jsonschema.validate(event, schema)
    assert {port: e["flow"]["category"] for port, e in flows.items()} == {
        445: "file_transfer", 443: "web", 873: "file_transfer", 3260: "file_transfer", 2049: "file_transfer",
        502: "ot", 40007: "unknown",
    }  # fmt: skip
    assert flows[445]["smb"]["bytes_written"] == 3000 and flows[443]["tls"]["sni"] == "hist.plant"
    assert "smb" not in flows[502] and flows[2049]["rpc"]["procedures"] == {"write": 1}
