"""The compliance table: statuses, linked findings, drift between the declared model and the wire."""

from __future__ import annotations

from agent.report import compliance


def rows(*args: object, **kwargs: object) -> dict[str, dict[str, object]]:
    return {r["id"]: r for r in compliance.table(*args, **kwargs)}  # type: ignore[arg-type]


def test_uncovered_traffic_is_no_conformity_of_sr_7_6_and_a_8_9() -> None:
    no_conduit = {"id": "F-0001", "iec62443_sr": ["SR 5.1", "SR 5.2"], "iso27001": ["A.8.20", "A.8.22"]}
    table = rows([no_conduit], {"policy": True}, drift=["F-0001"], drift_flows=3)
    for item in ("SR 7.6", "A.8.9"):
        assert table[item]["status"] == compliance.NON_CONFORMITY
        assert table[item]["findings"] == ["F-0001"]
        assert table[item]["reason"] == "3 flows no conduit covers (section 2), flagged by 1 finding"
    assert table["SR 5.1"]["findings"] == ["F-0001"] and table["SR 7.7"]["status"] == compliance.CONFORMITY


def test_drift_adds_to_the_findings_that_cite_the_item() -> None:
    firmware = {"id": "F-0002", "iec62443_sr": ["SR 3.4", "SR 7.6"], "iso27001": ["A.8.9"]}
    table = rows([firmware], {"policy": True}, drift=["F-0001"], drift_flows=1)
    assert table["SR 7.6"]["findings"] == ["F-0001", "F-0002"]
    assert (
        table["SR 7.6"]["reason"]
        == "1 finding cite it; 1 flow no conduit covers (section 2), flagged by 1 finding"
    )


def test_without_uncovered_traffic_the_model_items_conform() -> None:
    table = rows([], {"policy": True})
    assert table["SR 7.6"]["status"] == table["A.8.9"]["status"] == compliance.CONFORMITY
    assert rows([], {"policy": False})["SR 7.6"]["status"] == compliance.NOT_OBSERVABLE
