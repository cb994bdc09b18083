"""Detectors that consume flows and messages beyond the policy check (backup floods, control health)."""
