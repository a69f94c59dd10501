"""The runner's progress tally over a JSONL that grows in arbitrary pieces (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.load.runner import RecordTally

rows = st.lists(st.sampled_from([b'{"ok":true,"t":1.5}', b'{"ok":false,"error":"x"}']),
                max_size=30)


@given(rows, st.lists(st.integers(1, 40), max_size=60))
@settings(deadline=None)  # wall-clock deadlines fail on a busy 2-core machine
def test_tally_counts_complete_lines_whatever_the_write_boundaries(
        lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.jsonl"
        tally = RecordTally(path)
        assert tally.update() == (0, 0)  # not written yet
        written = 0
        with path.open("wb") as handle:
            for cut in [*cuts, len(data)]:
                handle.write(data[written:written + cut])
                handle.flush()
                written = min(written + cut, len(data))
                done, failed = tally.update()
                complete = data[:written].count(b"\n")
                assert done == complete
                assert failed == sum(b'"ok":false' in line for line in lines[:complete])
        assert tally.update() == (len(lines), sum(b'"ok":false' in line for line in lines))
