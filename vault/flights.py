"""Fetches in flight, shared: the callers that need what is being fetched await the one task
fetching it instead of each starting their own (a key's read from the database, the
revocation list's)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")


class Flights(dict[K, "asyncio.Task[T]"], Generic[K, T]):
    """The fetches in flight, by what they fetch; an entry leaves as its task ends (or when
    dropped, from any thread: the callers after that start afresh)."""

    def join(self, key: K, fetch: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The task fetching ``key``: the one in flight on this event loop, or a new one
        running ``fetch()``. Await it through ``asyncio.shield``: a caller that gives up
        must not cancel it for the others. Its failure counts as retrieved (every caller
        may have given up waiting, or none may wait at all)."""
        loop = asyncio.get_running_loop()
        task = self.get(key)
        if task is None or task.get_loop() is not loop:  # one loop's task serves only it
            task = self[key] = loop.create_task(self._run(key, fetch))
            task.add_done_callback(_collect)
        return task

    async def _run(self, key: K, fetch: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fetch()
        finally:
            # Dropped already, or replaced by another loop's: not this task's to remove.
            if self.get(key) is asyncio.current_task():
                self.pop(key, None)


def _collect(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
