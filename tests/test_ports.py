from agent.ports import guess_app_proto


def test_responder_port_first_then_initiator_port() -> None:
    assert guess_app_proto(6, 40000, 502) == "modbus"
    assert guess_app_proto(6, 502, 40000) == "modbus"  # first packet seen was the server's
    assert guess_app_proto(6, 445, 102) == "iso-tsap"  # the responder's port wins
    assert guess_app_proto(17, 50000, 47808) == "bacnet"


def test_unknown_ports_and_protocols() -> None:
    assert guess_app_proto(6, 40000, 40001) == ""
    assert guess_app_proto(1, 8, 0) == ""  # ICMP has no ports
