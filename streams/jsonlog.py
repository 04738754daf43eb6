"""JSON-lines logs for the worker (``DRIPDROP_LOG_FORMAT=json``): one object per record.

Fields: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, plus ``exc`` with the
traceback when there is one and any ``extra=`` fields that are JSON-serializable.
Faust's own startup banner is printed, not logged, so it stays plain text.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """Format a ``LogRecord`` as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config() -> dict[str, Any]:
    """A ``dictConfig`` that Faust merges into its own: the root handler writes JSON lines.

    Faust keeps the level given on its command line (``-l info``); only the handler of the
    root logger is replaced (``merge``: same handler name ``default``).
    """
    return {
        "version": 1,
        "merge": True,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
    }
