"""An emulator that is hard on clients: streams written the way real networks deliver them.

The plain emulator writes each SSE frame in one piece, on time, in ASCII, which is the one case
every stream reader gets right. A ``Stress`` makes a stream:

- **split** frames at random byte boundaries, preferring a cut inside a multibyte UTF-8
  character (a reader that decodes each network read on its own turns it into U+FFFD);
- **coalesce** several frames into one write (a reader that expects one event per read loses
  the rest);
- emit **multibyte** UTF-8 and emoji (accents, CJK, Cyrillic, 4-byte and ZWJ emoji) in the
  generated free text; scripted, review and JSON-schema answers stay as they are, so tests that
  assert on them are unaffected;
- send SSE **keep-alive** comments (``: keep-alive``) between frames;
- end lines with **CRLF** (the SSE spec allows LF, CRLF and CR; a cut may fall between the CR
  and its LF, so a reader must hold a trailing CR);
- vary **chunk timing**: deadlines later by a random share of the token interval and short
  pauses between the pieces of a split write.

Everything is seeded: the text depends only on ``seed`` (a stream and its non-stream twin get
the same words), the cuts and pauses on ``seed`` and the request's truth id. Turned on per run
(``running_studio(stress=Stress())``, ``create_app(stress=...)``) and per request with the
``X-Harness-Stress`` header: ``on``, ``off`` or a JSON object of fields, which wins over the
run's setting. The truth records every frame's own deadline and real write time as before;
keep-alive comments are not frames and are not recorded. When a fault is active, frames are not
coalesced: fault rules count frames (``after_chunks``) and a stall must not hold back the frames
already due before it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.faults import FaultPlanError, StreamDropped
from harness.studio.generation import WORDS

STRESS_HEADER = "x-harness-stress"
KEEPALIVE = b": keep-alive\n\n"

# One of each kind of trouble: 2-byte (Latin, Greek, Cyrillic), 3-byte (CJK, punctuation),
# 4-byte (emoji, math letters), combining marks and multi-codepoint emoji (ZWJ, skin tone, flag).
MULTIBYTE_WORDS: tuple[str, ...] = (
    "café", "naïve", "straße", "mañana", "über", "ελληνικά", "данные", "日本語", "東京",
    "한국어", "\u2014", "\u2192", "\u20ac", "\U0001f98a", "\U0001f44d\U0001f3fd",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f469\u200d\U0001f4bb",
    "\U0001d518\U0001d52b\U0001d526", "e\u0301", "\U0001f1fa\U0001f1e6",
)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Stress(BaseModel):
    """How hard to be on a client's stream reader (all seeded; see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    split: bool = True
    coalesce: int = Field(default=3, ge=1, le=64)  # at most this many frames per write
    multibyte: bool = True
    keepalive_every: int = Field(default=4, ge=0)  # a comment after every Nth write; 0: none
    jitter: float = Field(default=0.5, ge=0.0, le=10.0)  # share of the token interval
    max_gap_s: float = Field(default=0.002, ge=0.0, le=0.1)  # pause between split pieces
    crlf: bool = True  # CRLF line ends (SSE allows LF, CRLF and CR; a split may fall between)

    @classmethod
    def parse(cls, text: str) -> Stress | None:
        """The ``X-Harness-Stress`` header: ``on``, ``off`` or a JSON object of fields."""
        value = text.strip()
        if value.lower() in ("off", "0", "false", "none"):
            return None
        if value.lower() in ("on", "1", "true"):
            return cls()
        try:
            return cls.model_validate(json.loads(value))
        except (ValueError, ValidationError) as exc:
            raise FaultPlanError(f"invalid X-Harness-Stress header {value!r}: {exc}") from exc

    def vocabulary(self) -> tuple[str, ...]:
        """The words free text is drawn from (``generation.VOCABULARY``)."""
        return multibyte_vocabulary(self.seed) if self.multibyte else WORDS

    def rng(self, request_id: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + request_id)


@functools.lru_cache(maxsize=16)
def multibyte_vocabulary(seed: int) -> tuple[str, ...]:
    """``WORDS`` with about a third replaced by multibyte words (same length, so the
    generator's choices, and with them the reply's length in tokens, are unchanged)."""
    rng = random.Random(seed)
    return tuple(rng.choice(MULTIBYTE_WORDS) if rng.random() < 0.35 else word for word in WORDS)


def choose_stress(header: str | None, default: Stress | None) -> Stress | None:
    """The request's own header if it carries one, else the run's setting."""
    return default if header is None else Stress.parse(header)


def reschedule(stress: Stress, dues: array[float], interval: float, rng: random.Random,
               coalesce: bool) -> list[int]:
    """Jitter ``dues`` in place (never earlier, never out of order; the first frame keeps its
    deadline, so the scheduled time to first token holds) and return the group sizes: frames
    of one group share the deadline of its last frame and go out in one write."""
    for i in range(1, len(dues)):
        late = dues[i] + rng.uniform(0.0, stress.jitter * interval)
        dues[i] = max(late, dues[i - 1])
    groups = [1] if dues else []
    i = 1
    while i < len(dues):
        size = min(rng.randint(1, stress.coalesce) if coalesce else 1, len(dues) - i)
        last = dues[i + size - 1]
        for j in range(i, i + size):
            dues[j] = last
        groups.append(size)
        i += size
    return groups


def cuts(data: bytes, rng: random.Random) -> list[int]:
    """Up to three cut positions: one inside a multibyte character when there is one, often one
    between a CR and its LF, and one anywhere."""
    if len(data) < 2:
        return []
    inner = [i for i in range(1, len(data)) if 0x80 <= data[i] <= 0xBF]
    chosen = {rng.choice(inner)} if inner else set()
    after_cr = [i for i in range(1, len(data)) if data[i - 1] == 0x0D]
    if after_cr and rng.random() < 0.5:
        chosen.add(rng.choice(after_cr))
    for _ in range(rng.randint(0 if chosen else 1, 1)):
        chosen.add(rng.randrange(1, len(data)))
    return sorted(chosen)


class StressedWriter:
    """Writes a stream's frames as ``Stress`` says, recording each frame in the truth."""

    def __init__(self, stress: Stress, send: Send, rng: random.Random, groups: Sequence[int],
                 scheduled: array[float], sent_at: array[float]) -> None:
        self.stress = stress
        self.send = send
        self.rng = rng
        self.groups = groups
        self.scheduled = scheduled
        self.sent_at = sent_at
        self.writes = 0

    async def run(self, source: AsyncIterator[bytes], due: Callable[[], float]) -> None:
        """Drain ``source``; frames past the planned groups (cut-off endings) join the last."""
        pending: list[bytes] = []
        dues: list[float] = []
        group = 0
        try:
            async for frame in source:
                pending.append(frame)
                dues.append(due())
                if group < len(self.groups) and len(pending) >= self.groups[group]:
                    group += 1
                    await self._flush(pending, dues)
                    pending, dues = [], []
        except StreamDropped:  # a fault drops the connection: what was due still goes first
            if pending:
                await self._flush(pending, dues)
            raise
        if pending:
            await self._flush(pending, dues)

    async def _flush(self, frames: list[bytes], dues: list[float]) -> None:
        stress = self.stress
        self.writes += 1
        parts = list(frames)
        if stress.keepalive_every and self.writes % stress.keepalive_every == 0:
            parts.insert(self.rng.randrange(len(parts) + 1), KEEPALIVE)
        data = b"".join(parts)
        if stress.crlf:
            data = data.replace(b"\n", b"\r\n")
        start = 0
        for cut in cuts(data, self.rng) if stress.split else []:
            await self.send({"type": "http.response.body", "body": data[start:cut],
                             "more_body": True})
            start = cut
            if stress.max_gap_s:
                await asyncio.sleep(self.rng.uniform(stress.max_gap_s / 4, stress.max_gap_s))
        await self.send({"type": "http.response.body", "body": data[start:], "more_body": True})
        sent = time.monotonic()
        self.scheduled.extend(array("d", dues))
        self.sent_at.extend(array("d", [sent]) * len(dues))
