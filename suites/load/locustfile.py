"""LM Studio load test: ``locust -f suites/load/locustfile.py --host http://127.0.0.1:1234``.

Everything (users, shape, metrics, outputs) lives in ``harness.load.plugin``; this file only
exposes it to Locust. Options added to Locust's command line: ``--scenario FILE`` (default
``fixtures/load/smoke.toml``), ``--harness-out DIR``, ``--harness-users N``,
``--harness-duration S`` (all four also in the web UI's start form). The web UI works too: the
scenario's shape drives the user count, an "LLM metrics" and a "Scenario & verdict" tab show the
harness's live numbers and verdict, and each START is a new run. ``HARNESS_LOAD_USER=openai``
swaps in the openai-SDK user (used by ``benchmarks/bench_load.py`` for the comparison).
"""

import os

if os.environ.get("HARNESS_LOAD_USER", "harness") == "openai":
    from harness.load.sdk_user import OpenAISDKUser  # noqa: F401
else:
    from harness.load.plugin import LLMUser  # noqa: F401

from harness.load.plugin import ScenarioShape  # noqa: F401
