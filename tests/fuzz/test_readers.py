"""Every reader of untrusted input, fuzzed: a seeded mutation corpus per input kind (bit flips, byte
sets, 32/64-bit fields set to extremes, truncation at every structure boundary, and for JSON
structural mutations), each case run in-process by tests/fuzz/worker.py in a worker process whose
address space is capped 1 GiB above its own. Every case must end in a one-line QConvertError or in
a valid output: never another exception, a hang, a signal, or a huge allocation."""

import pytest

from tests.fuzz.conftest import FUZZ_CASES
from tests.fuzz.table import KINDS

@pytest.mark.parametrize("kind", list(KINDS))
def test_every_case_is_a_clear_error_or_a_valid_output(fuzz_results, kind):
    r = fuzz_results[kind]
    assert "crashed" not in r, r.get("crashed")
    others = "\n\n".join(f"case {o['case']}: {o['name']}\n{o['detail']}" for o in r["others"])
    assert r["other"] == 0, f"{r['other']} of {r['cases']} {kind} cases ended otherwise:\n{others}"
    assert r["cases"] == FUZZ_CASES and r["error"] + r["valid"] == r["cases"]
    # the corpus reaches past the first check: some mutations must still parse
    assert r["error"] > 0 and r["valid"] > 0, r
    # memory: nothing near the cap, no case near a hang
    assert r["rss_growth_mb"] < 256, r
    assert r["slowest_case_s"] < 10, r
