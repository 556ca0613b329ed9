"""The request log's writer: whole JSON lines, in order, in few writes, none lost at a flush."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from vault.logs import JsonLines


@pytest.fixture
def pipe() -> tuple[int, int]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    yield read, write
    os.close(read)
    os.close(write)


def drain(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


@pytest.fixture(autouse=True)
def info_level() -> None:
    logger = logging.getLogger("test.lines")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


def test_lines_wait_for_the_buffer_or_the_timer_then_come_whole_and_in_order(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe

    async def scenario() -> tuple[bytes, bytes]:
        lines = JsonLines("test.lines", write, flush_bytes=1 << 20, flush_seconds=0.05)
        for i in range(100):
            lines.write({"request": {"n": i, "path": "/v1/x"}})
        before = drain(read)  # nothing written yet: one write later
        await asyncio.sleep(0.1)
        return before, drain(read)

    before, after = asyncio.run(scenario())
    assert before == b""
    entries = [json.loads(line) for line in after.splitlines()]
    assert [e["request"]["n"] for e in entries] == list(range(100))
    assert {(e["level"], e["logger"]) for e in entries} == {("info", "test.lines")}
    assert all(e["time"].endswith("Z") and len(e["time"]) == 24 for e in entries)


def test_a_full_buffer_and_a_flush_write_at_once(pipe: tuple[int, int]) -> None:
    read, write = pipe
    lines = JsonLines("test.lines", write, flush_bytes=200, flush_seconds=60)
    lines.write({"a": "x" * 300})  # over the threshold: written now, no loop needed
    assert json.loads(drain(read))["a"] == "x" * 300
    lines.write({"b": 1})
    lines.flush()  # what shutdown does
    assert json.loads(drain(read))["b"] == 1


def test_a_disabled_logger_writes_nothing(pipe: tuple[int, int]) -> None:
    read, write = pipe
    logging.getLogger("test.lines").setLevel(logging.WARNING)
    lines = JsonLines("test.lines", write, flush_bytes=1)
    lines.write({"a": 1})
    lines.flush()
    assert drain(read) == b""


def test_a_closed_log_stream_does_not_fail_the_caller() -> None:
    read, write = os.pipe()
    os.close(read)
    os.close(write)
    lines = JsonLines("test.lines", write, flush_bytes=1)
    lines.write({"a": 1})  # EBADF: dropped, no exception
