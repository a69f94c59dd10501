"""Bad input to ``harness serve`` is refused with the option named, before anything starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harness.cli import app


@pytest.mark.parametrize(("option", "value"), [("--evict-mode", "nope"),
                                                ("--cutoff-style", "sometimes")])
def test_serve_refuses_unknown_choices(option: str, value: str) -> None:
    result = CliRunner().invoke(app, ["serve", option, value])
    assert result.exit_code == 2
    assert option in result.output and repr(value) in result.output
