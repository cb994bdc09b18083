"""The reload status the exporter publishes: success flag, time of the last good load, content hash."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.policy.engine import PolicyDetector
from agent.policy.reload import PolicyReloader, compile_policy

from .helpers import DEMO_POLICY


def test_refused_reload_is_reported_and_the_good_state_kept(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    shutil.copy(DEMO_POLICY, path)
    compiled, _ = compile_policy(str(path))
    assert compiled is not None
    reloader = PolicyReloader(str(path), PolicyDetector(compiled, lambda *args: None))
    assert reloader.last_success and len(reloader.digest) == 12
    first_digest, first_time = reloader.digest, reloader.last_success_time

    path.write_text(path.read_text() + "\n# a comment changes the hash, not the policy\n")
    assert reloader.reload("test")
    assert reloader.last_success and reloader.digest != first_digest
    assert reloader.last_success_time >= first_time
    good_digest, good_time = reloader.digest, reloader.last_success_time

    path.write_text("zones: [\n")
    assert not reloader.reload("test")
    assert not reloader.last_success
    assert reloader.digest == good_digest and reloader.last_success_time == good_time
    assert reloader.last_attempt_time >= good_time
    assert (reloader.reloads, reloader.refused) == (1, 1)
