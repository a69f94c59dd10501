"""What the blocking shell does that the asyncio one does differently: the same names as
``_backend_async.py`` (read that first), for ``sync.py``, which is generated from ``aio.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import httpx

from harness.client._httpx import sync_transport
from harness.client.errors import ModelSwitched
from harness.client.state import Inflight

Sleep = Callable[[float], None]

#: How the retry loop waits (a client takes another, e.g. a test's recorder, as ``sleep=``).
sleep: Sleep = time.sleep

#: The transport a client gets unless given one: httpx's, every socket operation bounded.
transport = sync_transport


class Cutoff:
    """How ``switch_model(inflight="cancel")``, called from another thread, cuts off a call of
    a blocking client: by closing ``response`` under the read blocked on it. The read fails,
    and the reader reports the switch (``ResponseReader.transport_failure``), so ``switched``
    is not needed here. Without a response (a call still sending, or reading a plain answer)
    nothing can be interrupted: the shell reads the answer to its end and keeps it on the
    ``ModelSwitched`` it raises. ``with cutoff:`` marks a wait, as in the async twin; a thread
    needs no marking.

    Installs itself as ``entry.cancel_hook`` until the owner clears that.
    """

    __slots__ = ()

    def __init__(self, entry: Inflight, switched: Callable[[], ModelSwitched],
                 response: httpx.Response | None = None) -> None:
        if response is not None:
            entry.cancel_hook = response.close

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass
