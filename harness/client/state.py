"""State shared by a client and every view made with ``with_options``: the default model, the
calls in flight (so ``switch_model`` can cut them off), the retry budget and the catalog.

Everything that changes while a client lives is here, behind one lock; every per-call value lives
in an immutable ``request.Call`` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from harness.client.catalog import ModelCatalog
from harness.client.errors import ValidationError
from harness.client.retry import RetryBudget
from harness.client.validation import validate_model_id

logger = logging.getLogger("harness.client")

InflightPolicy = Literal["finish", "cancel"]


class Inflight:
    """A running call as seen by ``switch_model``: its pinned model and how to cut it off."""

    __slots__ = ("cancel_hook", "cancelled", "model")

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.cancelled = False
        self.cancel_hook: Callable[[], None] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.cancel_hook is not None:
            try:
                self.cancel_hook()
            except Exception:  # the call reports ModelSwitched itself either way
                logger.debug("cancel hook failed", exc_info=True)


@dataclass
class SharedState:
    default_model: str | None
    budget: RetryBudget
    catalog: ModelCatalog
    lock: threading.Lock = field(default_factory=threading.Lock)
    inflight: set[Inflight] = field(default_factory=set)

    def register(self, model: str | None) -> Inflight:
        entry = Inflight(model)
        with self.lock:
            self.inflight.add(entry)
        return entry

    def unregister(self, entry: Inflight) -> None:
        with self.lock:
            self.inflight.discard(entry)

    def switch(self, model: str, inflight: InflightPolicy) -> int:
        """Make ``model`` the default; with ``cancel``, cut off calls pinned to another model.
        Returns how many calls were cancelled."""
        validate_model_id(model)
        if inflight not in ("finish", "cancel"):
            raise ValidationError("inflight", "must be 'finish' or 'cancel'")
        with self.lock:
            self.default_model = model
            victims = [e for e in self.inflight if inflight == "cancel" and e.model != model]
        for entry in victims:
            entry.cancel()
        logger.info("default model switched", extra={"model": model, "inflight": inflight,
                                                      "cancelled": len(victims)})
        return len(victims)
