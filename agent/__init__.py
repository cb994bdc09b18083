"""conduitwatch: a passive OT network monitoring agent."""

__version__ = "0.1.0"
