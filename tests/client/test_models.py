"""What the client reads off a model listing entry."""

from __future__ import annotations

from harness.client.models import ModelInfo


def test_model_info_context_in_force_and_quantization() -> None:
    loaded = ModelInfo.model_validate({
        "id": "q/q", "max_context_length": 262144, "quantization": {"name": "Q4_K_M"},
        "loaded_instances": [{"id": "q/q", "config": {"context_length": 42496}}]})
    assert (loaded.context_length, loaded.quantization_name) == (42496, "Q4_K_M")
    v0 = ModelInfo.model_validate({"id": "q/q", "max_context_length": 4096, "quantization": "4bit"})
    assert (v0.context_length, v0.quantization_name) == (4096, "4bit")
    assert ModelInfo(id="q/q").quantization_name is None
