"""The registry: port candidates confirmed by payload probes, shared ports, overrides."""

from __future__ import annotations

from typing import Any

from agent.decoders import _PORT_TRIES, Registry
from agent.decoders.base import DecoderConfig, DecoderContext, ProtocolSpec
from agent.flows import Flow


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.fed: list[bytes] = []

    def feed(self, *args: Any) -> None:  # pragma: no cover - the registry replays via feed_segment
        raise AssertionError("not used")

    def feed_segment(
        self, to_server: bool, seq: int, payload: bytes, ts: float, cnt: int, source: int
    ) -> None:
        self.fed.append(payload)

    def close(self, reason: str) -> None:
        pass


def spec(
    name: str, magic: bytes, tcp: frozenset[int] = frozenset({102}), any_port: bool = False
) -> ProtocolSpec:
    return ProtocolSpec(name, tcp, frozenset(), lambda data, _c: data.startswith(magic),
                        lambda _f, _ctx, _c: Recorder(name), probe_any_port=any_port)  # fmt: skip


def flow(dport: int) -> Flow:
    return Flow((b"\x0a\0\0\1", b"\x0a\0\0\2", 40000, dport, 6, ()), 1, 4, 0.0, 1, 0, 60.0)


def registry(*specs: ProtocolSpec, overrides: dict[str, tuple[int, ...]] | None = None) -> Registry:
    ctx = DecoderContext(DecoderConfig(), lambda _m: None, lambda _a: None)
    return Registry(ctx, specs, port_overrides=overrides)


def probe(reg: Registry, f: Flow, *payloads: bytes) -> None:
    reg.attach(f)
    for i, payload in enumerate(payloads):
        f.app.feed_segment(True, 1000 + i, payload, float(i), i + 1, 0)


def test_two_protocols_on_one_port_are_told_apart_by_payload() -> None:
    reg = registry(spec("s7", b"S7"), spec("mms", b"MMS"))
    first, second = flow(102), flow(102)
    probe(reg, first, b"MMS hello")
    probe(reg, second, b"S7 job")
    assert (first.app_proto, first.app.name, first.app.fed) == ("mms", "mms", [b"MMS hello"])
    assert second.app_proto == "s7" and second.app.name == "s7"


def test_a_message_split_over_segments_is_recognised_and_replayed_whole() -> None:
    reg = registry(spec("mms", b"MMS!"))
    f = flow(102)
    probe(reg, f, b"MM", b"S!rest")
    assert f.app_proto == "mms" and f.app.fed == [b"MM", b"S!rest"]


def test_nothing_matching_drops_the_decoder_and_the_port_name() -> None:
    reg = registry(spec("s7", b"S7"), spec("mms", b"MMS"))
    f = flow(102)
    f.app_proto = "s7"
    probe(reg, f, *[b"junk"] * _PORT_TRIES)
    assert f.app is None and f.app_proto == "unknown"


def test_override_port_is_probed_first_and_served() -> None:
    s7, mms = spec("s7", b"S7"), spec("mms", b"MMS")
    reg = registry(s7, mms, overrides={"mms": (5102,)})
    assert reg.serves(mms, 6) == {102, 5102} and reg.serves(s7, 6) == {102}
    f = flow(5102)
    probe(reg, f, b"MMS")
    assert f.app_proto == "mms"


def test_any_port_probe_finds_a_protocol_off_its_port() -> None:
    reg = registry(spec("mms", b"MMS", any_port=True))
    f = flow(9999)
    probe(reg, f, b"MMS")
    assert f.app_proto == "mms"
