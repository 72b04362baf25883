"""Log output of ``flashtts serve``: text for people, or one JSON object per line for log collectors.

Both formats name the request a line was written for (``X-Request-Id``), uvicorn's access log included:
uvicorn is started without its own logging config, so its loggers end up in the handler set here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

from .request_id import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served (``None`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, and for
    uvicorn's access lines also client, method, path and status."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _http_version, status = record.args
            entry.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Route every logger (ours, uvicorn's, the libraries') to one stderr handler in ``log_format``."""
    if log_format == "json":
        # Progress bars (tqdm: transformers' "Loading weights", huggingface_hub) are not JSON lines.
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), handlers=[handler], force=True)
    # Python warnings (deprecations from libraries) as log records too, not bare lines on stderr.
    logging.captureWarnings(True)
