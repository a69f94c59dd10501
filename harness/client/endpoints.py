"""What ``Client`` and ``AsyncClient`` share that is not I/O: options, shared state, and the
rules of the public API (model resolution, ``switch_model``, the catalog).

As httpx splits ``BaseClient`` (rules) from ``Client``/``AsyncClient`` (I/O): the shells inherit
this and add only sending, reading, sleeping and cancellation.
"""

from __future__ import annotations

from harness.client import request
from harness.client.catalog import ModelCatalog
from harness.client.config import ClientOptions, Timeouts, make_options
from harness.client.retry import RetryBudget, RetryPolicy
from harness.client.state import InflightPolicy, SharedState


class ClientRules:
    _options: ClientOptions
    _shared: SharedState

    def _setup(self, base_url: str, model: str | None, api_token: str | None,
               timeout: Timeouts | float | None, retry: RetryPolicy | None,
               catalog: ModelCatalog) -> ClientOptions:
        """Validate the constructor's arguments (before any I/O) and create the shared state.
        Returns the full options, whose ``model`` is the initial default."""
        options = make_options(base_url, model, api_token, timeout, retry)
        self._options = options.without_model()
        self._shared = SharedState(options.model, RetryBudget.for_policy(options.retry), catalog)
        return options

    @property
    def base_url(self) -> str:
        return self._options.base_url

    @property
    def model(self) -> str | None:
        """The model a call started now would use."""
        return self._options.model or self._shared.default_model

    @property
    def catalog(self) -> ModelCatalog:
        """The cached model listing, shared with every ``with_options`` view."""
        return self._shared.catalog

    def _model(self, explicit: str | None) -> str | None:
        """The model of a call starting now (resolved once, then frozen in its ``Call``)."""
        return request.resolve(explicit, self._options.model, self._shared.default_model)

    def switch_model(self, model: str, *, inflight: InflightPolicy = "finish") -> int:
        """New calls use ``model``. With ``inflight="cancel"`` running calls pinned to another
        model end with ``ModelSwitched`` (partial output kept); with ``finish`` they complete on
        their own model. Returns the number of calls cancelled."""
        return self._shared.switch(model, inflight)
