"""Describing a live target: a server that refuses the token is an error, not "no models"."""

from __future__ import annotations

import pytest

from harness.evaluate.target import TargetError, live_target
from harness.studio.testing import running_studio

TOKEN = "sk-lm-target:L1VE-secret"


def test_live_target_refusing_the_token_is_a_clear_error() -> None:
    with running_studio(api_token=TOKEN) as studio:
        with pytest.raises(TargetError) as caught:
            live_target(studio.base_url, None, ())
        target = live_target(studio.base_url, TOKEN, ())
    text = str(caught.value)
    assert f"GET {studio.base_url}/api/v0/models" in text and "HTTP 401" in text, text
    assert "qwen/qwen3-4b" in target.models and target.info["models"]
    assert TOKEN not in repr(target.info)
