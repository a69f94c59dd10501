"""The README's "Testing your own app" section documents every fixture the plugin offers and
every fault action the emulator knows (a new one must be added there, with an example)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import harness.faults
import harness.pytest_plugin as plugin

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Testing your own app")
    return text[start:text.index("\n## ", start + 1)]


def fault_actions() -> list[str]:
    union = typing.get_args(harness.faults.FaultAction)[0]
    return [cls.__name__ for cls in typing.get_args(union)]


def public_fixtures() -> list[str]:
    names = []
    for name, value in vars(plugin).items():
        if name.startswith("_") or not callable(value):
            continue
        if getattr(value, "_fixture_function_marker", None) or "FixtureFunctionDefinition" in (
                type(value).__name__):
            names.append(name)
    return names


def test_every_fault_action_has_a_row_with_an_example() -> None:
    text = section()
    actions = fault_actions()
    assert len(actions) > 10
    for name in actions:
        assert f"| `{name}` |" in text and f"`{name}(" in text, f"{name} is not documented"


def test_every_fixture_is_documented() -> None:
    text = section()
    fixtures = [f for f in public_fixtures() if f not in ("harness_target", "subject_spec")]
    assert {"target", "faults", "truth", "subject", "make_subject", "vcr"} <= set(fixtures)
    for name in fixtures:
        assert f"`{name}`" in text, f"fixture {name} is not documented"
    assert inspect.getdoc(plugin.target) and "openai_base_url" in inspect.getdoc(plugin.target)
