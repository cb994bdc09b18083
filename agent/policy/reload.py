"""Loading a policy for a run, and swapping in a new one while it runs (SIGHUP, file watch).

A reload with an invalid file is refused: its errors are logged and the running policy stays.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time

from agent.policy.engine import CompiledPolicy, PolicyDetector
from agent.policy.loader import load_policy
from agent.policy.model import Problem

log = logging.getLogger("conduitwatch.policy")


def compile_policy(path: str) -> tuple[CompiledPolicy | None, list[Problem]]:
    """The compiled policy (None when the file has errors) and every problem found."""
    policy, problems = load_policy(path)
    return (CompiledPolicy(policy) if policy is not None else None), problems


def file_digest(path: str) -> str:
    """A short content hash of the policy file, so dashboards show which version is in force."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        return "unreadable"


class PolicyReloader:
    """Reloads ``path`` into ``detector`` on request or when the file changes."""

    def __init__(self, path: str, detector: PolicyDetector, watch_interval: float = 2.0) -> None:
        self.path = path
        self.detector = detector
        self.watch_interval = watch_interval
        self.reloads = 0
        self.refused = 0
        # Status for the exporter: the initial load (done before the reloader exists) counts as the first
        # success; afterwards every reload attempt, good or refused, updates these.
        self.last_success = True
        self.last_attempt_time = time.time()
        self.last_success_time = self.last_attempt_time
        self.digest = file_digest(path)
        self._stamp = self._file_stamp()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def reload(self, reason: str) -> bool:
        """Load and swap in the file; False (old policy kept) when it is invalid or unreadable."""
        with self._lock:
            self._stamp = self._file_stamp()
            compiled, problems = compile_policy(self.path)
            self.last_attempt_time = time.time()
            self.last_success = compiled is not None
            for problem in problems:
                (log.error if problem.severity == "error" else log.warning)("%s", problem)
            if compiled is None:
                self.refused += 1
                log.error("policy reload (%s) refused: %s has errors; the previous policy stays in force",
                          reason, self.path)  # fmt: skip
                return False
            self.detector.swap(compiled)
            self.digest = file_digest(self.path)
            self.last_success_time = self.last_attempt_time
            self.reloads += 1
            log.warning(
                "policy reloaded (%s) from %s: generation %d", reason, self.path, self.detector.generation
            )
            return True

    def start_watching(self) -> None:
        """Poll the file's modification time in a daemon thread; reload when it changes."""
        self._thread = threading.Thread(target=self._watch, name="policy-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_interval):
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self.reload("file changed")

    def stop(self) -> None:
        self._stop.set()
