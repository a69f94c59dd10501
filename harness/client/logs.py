"""Structured logging on stdlib ``logging``: fields travel in ``extra``; this formatter, opt-in,
prints them as one JSON object per line. Secrets are redacted at the last moment as well, so a
token that slipped into a message or field still never reaches the output."""

from __future__ import annotations

import json
import logging
from typing import Any

from harness.client.errors import redact

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))


def enable_json_logging(level: int = logging.INFO, logger: str = "harness") -> logging.Handler:
    """Attach a stderr handler with ``JSONFormatter`` to the harness loggers; returns it."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(level)
    return handler
