"""A pytest plugin the mutation runner loads (``-p tests.mutation.hypothesis_profile``).

Under mutmut every function call goes through a trampoline and the machine is shared, so
hypothesis' per-example deadline and its too-slow health checks fail clean code; and a mutation
score must not depend on which examples a random seed happened to draw. Hence: no deadline, no
health checks, derandomized examples (the same ones on every run and for every mutant).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("mutation", deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
settings.load_profile("mutation")
