"""Fixtures and settings shared across test directories."""

import os

from hypothesis import settings

from tests.netns import netpair  # noqa: F401 - the network-namespace fixture, for any test that asks

# CI runs the property tests derandomised so that its verdict is reproducible; exploring new inputs
# is the job of local runs, which draw fresh examples each time (and of seed sweeps such as
# `for s in $(seq 50); do pytest -q tests/decoders --hypothesis-seed=$s; done`).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
