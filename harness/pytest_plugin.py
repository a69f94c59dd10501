"""Pytest plugin of the harness (entry point ``pytest11``)."""
