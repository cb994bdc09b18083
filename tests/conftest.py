"""Fixtures shared across test directories."""

from tests.netns import netpair  # noqa: F401 - the network-namespace fixture, for any test that asks
