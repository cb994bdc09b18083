"""Real-time replay: hand frames on at the pace they were recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from agent.records import Frame

# Sleep in slices so that a stop request is honoured promptly even across a long capture gap.
_SLICE = 0.1


def paced(
    frames: Iterable[Frame],
    should_stop: Callable[[], bool],
    speed: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Frame]:
    """Yield ``frames`` no earlier than their capture offsets (divided by ``speed``) from the first.

    Iteration ends as soon as ``should_stop()`` is true, so a stop request is not held up by pacing.
    Results do not depend on the pacing: stages only ever look at packet time.
    """
    start_wall = 0.0
    start_ts: float | None = None
    for frame in frames:
        if should_stop():
            return
        ts = frame[0]
        if start_ts is None:
            start_ts = ts
            start_wall = clock()
        else:
            due = start_wall + (ts - start_ts) / speed
            while True:
                wait = due - clock()
                if wait <= 0 or should_stop():
                    break
                sleep(min(wait, _SLICE))
        yield frame
