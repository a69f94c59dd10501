"""No per-example hypothesis deadline in the default test run.

CI runs ``pytest -n 2`` on a busy 2-core machine, where a garbage collection or a descheduled
worker stretches a sub-millisecond example past hypothesis' 200 ms default and fails clean code
(seen once: ``test_str_names_method_url_model_attempt`` under a full run at load 10). Speed is
measured in ``benchmarks/``, never by a test's deadline. A profile loaded before this file (the
mutation runner's, which has no deadline either) is left as it is; a test's own ``@settings``
still wins.
"""

from __future__ import annotations

from hypothesis import settings

current = settings.default
if current is not None and current.deadline is not None:
    settings.register_profile("harness-tests", deadline=None)
    settings.load_profile("harness-tests")
