"""The suites themselves, run against a client with a planted bug, must fail.

The bug is the one the tidy emulator could never show: the harness client's SSE decoder is made
to decode each network read on its own (``errors="replace"``), so a multibyte character split
across two reads becomes U+FFFD. The streaming suite (``-m streaming``, whatever its files look
like) runs in a subprocess on its default target, the embedded emulator, whose streams are
stressed by default; it has to report a failure. The same suite passes with the real decoder in
every normal test run, which is the control.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FLAWED_DECODER = '''
from harness.client.sse import SSEDecoder

_take = SSEDecoder._take


def take(self, chunk):
    # Every read, on the fast path (feed_messages) or the general one (feed), enters here.
    return _take(self, chunk.decode("utf-8", "replace").encode("utf-8"))


SSEDecoder._take = take
'''


@pytest.mark.slow
def test_the_streaming_suite_fails_a_client_that_decodes_each_read_alone(tmp_path: Path) -> None:
    (tmp_path / "flawed_decoder.py").write_text(FLAWED_DECODER, "utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "flawed_decoder", "-p",
         "no:cacheprovider", "-m", "streaming", str(REPO / "suites")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "\ufffd" in run.stdout and "1 failed" in run.stdout, run.stdout[-3000:]
