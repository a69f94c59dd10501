"""What the asyncio shell does that the blocking one does differently, in the names ``aio.py``
uses (``backend.sleep``, ``backend.Cutoff``...). ``_backend_sync.py`` defines the same names for
the blocking shell, so ``sync.py`` is ``aio.py`` with ``async``/``await`` removed and names
renamed (``python -m harness.client._generate``), and every rule stays written once.

The deadline is not here: both shells get it from ``_httpx.LimitedBackend``, which bounds every
socket operation by the attempt's ``read_by``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import httpx

from harness.client._httpx import async_transport
from harness.client.errors import ModelSwitched
from harness.client.state import Inflight

Sleep = Callable[[float], Awaitable[None]]

#: How the retry loop waits (a client takes another, e.g. a test's recorder, as ``sleep=``).
sleep: Sleep = asyncio.sleep

#: The transport a client gets unless given one: httpx's, every socket operation bounded.
transport = async_transport


class Cutoff:
    """How ``switch_model(inflight="cancel")``, called from any thread, cuts off a call of this
    task: it cancels the task, but only while the task waits inside ``with cutoff:`` (one of our
    sends, reads or retry sleeps). Elsewhere the task runs the caller's own code, which must
    never see a stray ``CancelledError``; the reader notices the flag at its next read instead.
    The ``CancelledError`` a cut-off causes leaves the ``with`` as ``switched()``.

    Installs itself as ``entry.cancel_hook`` until the owner clears that. ``response`` is not
    needed here (the blocking twin closes it); ``with`` blocks may nest.
    """

    __slots__ = ("_inside", "_loop", "_requested", "_switched", "_task")

    def __init__(self, entry: Inflight, switched: Callable[[], ModelSwitched],
                 response: httpx.Response | None = None) -> None:
        self._switched = switched
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._inside = 0
        self._requested = False
        entry.cancel_hook = self._request

    def _request(self) -> None:
        """Any thread: ask the loop to cut the call off."""
        self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        """On the loop: cancel the task only if it is waiting inside one of our ``with`` (and
        only once: a second cancel would outlive the ``uncancel`` that maps the first)."""
        if self._inside and self._task is not None and not self._requested:
            self._requested = True
            self._task.cancel()

    def __enter__(self) -> None:
        if not self._inside:
            self._task = asyncio.current_task()
        self._inside += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._inside -= 1
        if self._requested and isinstance(exc, asyncio.CancelledError):
            self._requested = False
            task = self._task
            if task is not None and task.uncancel() == 0:  # ours alone, not the caller's too
                raise self._switched() from None
