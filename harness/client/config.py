"""A client's options as small immutable values: ``Timeouts`` and ``ClientOptions``.

Validated when made (before any I/O), never changed afterwards: a ``with_options`` view gets a
new value, so no call ever sees its limits change under it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.client.errors import ValidationError
from harness.client.retry import RetryPolicy
from harness.client.validation import normalize_base_url, validate_model_id
from harness.secrets import register

#: How many calls one client is documented to carry at once (README, "The client core"). The
#: default pool is sized for it, and a call waiting for a free connection counts against its
#: deadline instead of failing after a short pool timeout.
DOCUMENTED_CONCURRENCY = 1000


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds, each bounding one phase of a call:

    - ``connect``: opening a TCP connection;
    - ``write``: sending the request (a large prompt to a server that is not taking it);
    - ``pool``: waiting for a free pooled connection (``None``: as long as the deadline allows);
    - ``read``: headers, or a whole non-streamed body (JIT loads take tens of seconds);
    - ``first_token``: from sending a streamed request to its first token: covers a JIT load
      plus the prefill of a long prompt, during which LM Studio sends nothing;
    - ``stream_idle``: the longest silence between tokens once the first one arrived, while the
      client waits (the caller's own time over an event does not count). SSE comments and
      keep-alive whitespace do not count as data: a stream that sends only those stalls all
      the same;
    - ``deadline``: the whole call, retries and backoff included, whatever the server trickles.
    """

    connect: float = 5.0
    read: float = 120.0
    write: float = 30.0
    stream_idle: float = 60.0
    deadline: float = 600.0
    first_token: float = 300.0
    pool: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "stream_idle", "deadline", "first_token",
                     "pool"):
            value = getattr(self, name)
            if name == "pool" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValidationError(f"timeout.{name}", f"must be positive, got {value!r}")

    @classmethod
    def coerce(cls, value: Timeouts | float | int | None) -> Timeouts:
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValidationError("timeout", f"must be positive seconds or Timeouts, got {value!r}")
        seconds = float(value)
        return cls(connect=min(5.0, seconds), read=seconds, write=seconds, stream_idle=seconds,
                   first_token=seconds, deadline=max(seconds, 600.0))


@dataclass(frozen=True, slots=True)
class ClientOptions:
    base_url: str
    model: str | None
    api_token: str | None
    timeouts: Timeouts
    retry: RetryPolicy

    def without_model(self) -> ClientOptions:
        """The root client keeps its default model in ``SharedState`` (so ``switch_model`` can
        change it); only views made by ``with_options`` pin a model in their options."""
        return replace(self, model=None)


def _header_safe(token: str) -> bool:
    return token.isascii() and token.isprintable() and token == token.strip()


def make_options(base_url: str, model: str | None, api_token: str | None,
                 timeout: Timeouts | float | None, retry: RetryPolicy | None) -> ClientOptions:
    root = normalize_base_url(base_url)
    if model is not None:
        validate_model_id(model)
    if api_token is not None and (not isinstance(api_token, str) or not api_token.strip()):
        raise ValidationError("api_token", "must be a non-empty string or None")
    if api_token is not None and not _header_safe(api_token):
        # Refused here, not left to the HTTP layer: h11 would fail every request with a
        # transport error, and a non-ASCII token with a bare UnicodeEncodeError.
        raise ValidationError("api_token", "must be printable ASCII with no surrounding "
                              "whitespace (a token read from a file keeps its newline)")
    register(api_token)  # harness.secrets: its value is redacted from every error and log
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ValidationError("retry", "must be a RetryPolicy")
    return ClientOptions(root, model, api_token, Timeouts.coerce(timeout), retry or RetryPolicy())


def derive_options(options: ClientOptions, *, model: str | None = None,
                   timeout: Timeouts | float | None = None, retry: RetryPolicy | None = None
                   ) -> ClientOptions:
    if model is not None:
        validate_model_id(model)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ValidationError("retry", "must be a RetryPolicy")
    return replace(
        options,
        model=model if model is not None else options.model,
        timeouts=Timeouts.coerce(timeout) if timeout is not None else options.timeouts,
        retry=retry if retry is not None else options.retry,
    )
