"""Test support: stand-ins for the outside world and launchers of real tools."""
