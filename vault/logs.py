"""Structured logs: one JSON object per line, so a log pipeline can index them. Records carry
names, classes, ids and outcomes; never a plaintext, seed, OTP, PIN, token or key byte."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

import msgspec

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.getMessage()
        if message:
            entry["message"] = message
        for name, value in record.__dict__.items():
            if name not in _STANDARD:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(level: int = logging.INFO, *, json_lines: bool = True) -> None:
    """Log to standard error: JSON lines for the service, plain text for the officers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class JsonLines:
    """A busy stream of JSON lines (the request log): each entry appended to a buffer, the
    buffer written in one ``write(2)`` once it holds ``flush_bytes`` or ``flush_seconds``
    after its first line, and at shutdown. ``logging`` costs a record, a formatter and a
    write per line — as much CPU as the rest of a small request. The lines are whole and in
    order; those of the last fraction of a second die with a killed process (the audit
    chain, not this log, is the record that must survive).

    Lines carry the same ``time``, ``level`` and ``logger`` fields as :class:`JsonFormatter`
    writes, and only when ``logger`` is enabled for INFO (checked at construction)."""

    def __init__(
        self,
        logger: str,
        fd: int | None = None,
        *,
        flush_bytes: int = 64 * 1024,
        flush_seconds: float = 0.2,
    ) -> None:
        self.enabled = logging.getLogger(logger).isEnabledFor(logging.INFO)
        self._logger = logger
        self._fd = fd
        self._flush_bytes = flush_bytes
        self._flush_seconds = flush_seconds
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._encoder = msgspec.json.Encoder()
        self._second = -1
        self._stamp = ""

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        now = time.time()
        second = int(now)
        if second != self._second:  # strftime once a second, not once a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "time": f"{self._stamp}.{int((now - second) * 1000):03d}Z",
            "level": "info",
            "logger": self._logger,
            **fields,
        }
        self._encoder.encode_into(entry, self._buffer, -1)
        self._buffer += b"\n"
        if len(self._buffer) >= self._flush_bytes:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self._flush_seconds, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        data, self._buffer = memoryview(bytes(self._buffer)), bytearray()
        fd = self._fd if self._fd is not None else sys.stderr.fileno()
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            pass  # nowhere to log to: the request still stands (and is in the audit chain)
