"""jndkit: make photos unreadable to machines while people see no change."""

__version__ = "0.1.0"
