from agent.capture.pacing import paced
from agent.records import Frame


def frames(times: list[float]) -> list[Frame]:
    return [(t, b"", 0, 0, 1, i + 1, 0) for i, t in enumerate(times)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_frames_are_released_at_their_recorded_offsets() -> None:
    c = FakeClock()
    released = []
    for frame in paced(frames([50.0, 50.5, 52.0]), lambda: False, clock=c.clock, sleep=c.sleep):
        released.append((frame[0], round(c.now - 1000.0, 6)))
    assert released == [(50.0, 0.0), (50.5, 0.5), (52.0, 2.0)]
    assert max(c.slept) <= 0.1  # slices, so a stop request is seen quickly


def test_speed_factor_and_stop() -> None:
    c = FakeClock()
    out = [f[0] for f in paced(frames([0.0, 10.0]), lambda: False, speed=10.0, clock=c.clock, sleep=c.sleep)]
    assert out == [0.0, 10.0] and round(c.now - 1000.0, 6) == 1.0
    stop = {"now": False}

    def sleep(seconds: float) -> None:
        stop["now"] = True
        c.sleep(seconds)

    out = [f[0] for f in paced(frames([0.0, 100.0, 200.0]), lambda: stop["now"], clock=c.clock, sleep=sleep)]
    assert out == [0.0, 100.0]  # the frame being waited for goes out, then iteration ends
