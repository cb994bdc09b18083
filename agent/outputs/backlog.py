"""What a sink does when its destination fails: count, keep a bounded backlog, retry later.

A full disk or a syslog receiver that is down must never stop monitoring, and must not grow memory
without bound either. Sinks hand every encoded record to ``Backlog.put``; records that cannot be
written stay queued (oldest dropped and counted beyond the limit) and are retried at most once a
second (wall time), so a dead destination costs a deque append per event, not a failed system call.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_INTERVAL = 1.0  # seconds of wall time between attempts while the destination is failing
DEFAULT_LIMIT = 1 << 24  # bytes kept waiting (16 MiB): ~20,000 alert lines


class Backlog:
    """Delivery with retry for one sink. ``write(data)`` returns how many bytes it delivered.

    ``write`` may deliver part of ``data`` (a non-blocking socket); the rest stays first in line.
    It raises ``OSError`` when the destination fails. A record may hold several events (the EVE
    file's batches of lines): ``put`` says how many, and the counters count events, not records.
    """

    def __init__(self, name: str, write: Callable[[bytes], int], limit: int = DEFAULT_LIMIT) -> None:
        self.name = name
        self._write = write
        self.limit = limit
        self._queue: deque[bytes] = deque()
        self._events: deque[int] = deque()  # events in each queued record
        self.queued_bytes = 0
        self.queued_events = 0
        self.sent = 0  # events whose record was delivered whole
        self.failures = 0  # failed delivery attempts
        self.dropped = 0  # events dropped (with their record) because the backlog was full
        self._retry_at = 0.0
        self._failing = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, record: bytes, events: int = 1) -> None:
        queue = self._queue
        queue.append(record)
        self._events.append(events)
        self.queued_bytes += len(record)
        self.queued_events += events
        while self.queued_bytes > self.limit and len(queue) > 1:
            self.queued_bytes -= len(queue.popleft())
            lost = self._events.popleft()
            self.queued_events -= lost
            self.dropped += lost
        if self._failing and time.monotonic() < self._retry_at:
            return
        self.drain()

    def drain(self) -> bool:
        """Deliver what is queued; False if the destination is (still) failing or slow."""
        queue = self._queue
        write = self._write
        while queue:
            record = queue[0]
            try:
                n = write(record)
            except (BlockingIOError, InterruptedError):
                return False  # a slow receiver: keep the rest for the next event
            except OSError as e:
                self.failures += 1
                self._retry_at = time.monotonic() + RETRY_INTERVAL
                if not self._failing:
                    log.warning("%s output failing (%s): keeping up to %d bytes to retry", self.name,
                                e.strerror or e, self.limit)  # fmt: skip
                self._failing = True
                return False
            if n < len(record):
                queue[0] = record[n:]
                self.queued_bytes -= n
                return False
            queue.popleft()
            self.queued_bytes -= n
            delivered = self._events.popleft()
            self.queued_events -= delivered
            self.sent += delivered
        if self._failing:
            log.warning("%s output recovered (%d events dropped meanwhile)", self.name, self.dropped)
            self._failing = False
        return True

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "failures": self.failures, "dropped": self.dropped,
                "queued": self.queued_events, "queued_bytes": self.queued_bytes}  # fmt: skip
