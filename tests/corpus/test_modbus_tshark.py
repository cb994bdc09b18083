"""Modbus/TCP function codes, frame by frame, against tshark (see ot_oracle)."""

import pytest

from tests.corpus.ot_oracle import assert_agreement, captures_with, compare_protocol

pytestmark = pytest.mark.corpus


def _codes(values: list[str]) -> list[int]:
    # modbus.func_code is the function code without the exception bit (tshark shows exceptions
    # with func_code & 0x7F as well), one occurrence per PDU in the frame.
    return [int(v) for v in values[0].split(",") if v] if values else []


def test_modbus_function_codes_match_tshark() -> None:
    captures = captures_with("MODBUS")
    if not captures:
        pytest.skip("corpus not available")
    result = compare_protocol("modbus", captures, "modbus", _codes, tshark_field_names=["modbus.func_code"],
                              our_code=lambda m: m.function & 0x7F)  # fmt: skip
    assert_agreement(result)
