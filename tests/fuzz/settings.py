"""How much the fuzz tests try: a fixed, bounded number of examples per test in the suite (derandomized, so a
run is repeatable), many more with ORTSERVE_FUZZ_EXAMPLES (`make fuzz`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("ORTSERVE_FUZZ_EXAMPLES", "60"))

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
