"""Tests that kill the surviving mutants of ``harness/client/stream.py`` (docs/mutation.md):
the ``host:port`` errors name when a URL gives no port (a scheme's default port)."""

from __future__ import annotations

import pytest

from harness.client.stream import where


@pytest.mark.parametrize(("url", "named"), [
    ("https://lmstudio.example/v1/chat/completions", "lmstudio.example:443"),
    ("http://lmstudio.example/v1/models", "lmstudio.example:80"),
    ("https://127.0.0.1:8443/v1/models", "127.0.0.1:8443"),
    ("http://127.0.0.1:1234", "127.0.0.1:1234"),
])
def test_an_error_names_the_port_the_scheme_implies(url: str, named: str) -> None:
    assert where(url) == named
