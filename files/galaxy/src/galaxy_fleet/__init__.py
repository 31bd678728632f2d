"""Galaxy: run a fleet of machines from a phone."""

__version__ = "0.1.0"
