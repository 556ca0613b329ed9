"""The audit chain: one record per request and per lifecycle event, durable before the answer.

Requests do not each pay for a transaction: :meth:`AuditChain.append` queues the record and
waits; one flush at a time per process takes everything queued (group commit) and appends it
in one transaction (``vault.store.audit``), so under load a commit carries many records and
each request still waits for its own record to be committed. If the flush fails, every
request in it fails (the gate then answers 503: fail closed).

Checkpoints are signed off the request path, every ``checkpoint_records`` records or
``checkpoint_seconds`` seconds after the first record not yet signed, whichever comes first,
by whichever process notices (two cannot extend the same checkpoint: ``prev_seq`` is unique).

Pruning (``hsm-vault audit prune``) removes records older than the retention up to a signed
checkpoint, which stays as the anchor the rest of the chain starts from, and records itself
in the chain in the same transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vault.audit.keys import SIGNING_KEY, AuditKeys
from vault.audit.records import (
    ZERO_HASH,
    Checkpoint,
    Record,
    checkpoint_digest,
    encode,
    timestamp,
)
from vault.errors import StoreUnavailable
from vault.events import LifecycleEvent
from vault.store.audit import AuditStore, Draft, Head, StoredCheckpoint

log = logging.getLogger("vault.audit")

DAY = 86400


@dataclass(frozen=True, slots=True)
class AuditSettings:
    checkpoint_records: int = 1000
    checkpoint_seconds: float = 5.0
    retention_days: int = 365
    max_batch: int = 512  # records per transaction


class AuditObserver(Protocol):
    """Told of each flush and checkpoint (the API's metrics)."""

    def flushed(self, records: int, seconds: float, ok: bool) -> None: ...

    def checkpointed(self, ok: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class Pruned:
    through: int  # the anchor: records up to it are gone, its checkpoint stays
    seq: int | None  # the prune's own record (None: a dry run, nothing removed)


def event_record(event: LifecycleEvent) -> Record:
    return Record(
        at=timestamp(event.at),
        type="event",
        event=event.kind,
        actor=event.actor,
        key=event.key,
        key_version=event.version,
        details=dict(event.details) or None,
    )


def _expire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_exception(StoreUnavailable("the audit record was not confirmed in time"))


class AuditChain:
    """The chain, as one process appends to it; also the vault's ``EventSink``."""

    def __init__(
        self,
        store: AuditStore,
        keys: AuditKeys,
        settings: AuditSettings | None = None,
        *,
        observer: AuditObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings or AuditSettings()
        self.observer = observer
        self._clock = clock
        self._queued: list[tuple[Draft, asyncio.Future[None]]] = []
        self._flushing = 0  # flushers running (counted here, not by their tasks' callbacks)
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsigned = 0
        self._signed_at = time.monotonic()
        self._checkpointing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- appending -------------------------------------------------------------------------

    async def append(self, record: Record, at: float) -> None:
        """Add ``record``; returns once it is committed (raises if it could not be)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queued.append(((record, at), done))
        if self._flushing < self.store.concurrent_appends:
            # Counted now and uncounted by the flusher itself as it ends, in the same step as
            # its last look at the queue: a record queued after that look starts a new one.
            self._flushing += 1
            flusher = loop.create_task(self._flush())
            self._tasks.add(flusher)
            flusher.add_done_callback(self._tasks.discard)
        # A flush is bounded by the database's own time limit; this bounds the wait for it
        # too, so that no request can hang on its record (it fails closed instead). A timer
        # on the future itself: a fifth of what asyncio.timeout costs per request.
        expiry = loop.call_later(2 * self.store.db.timeout, _expire, done)
        try:
            await done
        finally:
            expiry.cancel()

    async def _flush(self) -> None:
        """Commit what is queued, batch after batch. Where the store takes appends side by
        side (PostgreSQL), a second flusher commits what arrived while the first waits for
        the disk, and the two share one flush of the WAL."""
        try:
            await self._drain()
        finally:
            self._flushing -= 1

    async def _drain(self) -> None:
        while self._queued:
            batch = self._take([])
            started = time.perf_counter()
            try:
                await self._commit(batch)
            except Exception as exc:
                log.error("audit records could not be written: %s", type(exc).__name__)
                self._observe_flush(len(batch), started, ok=False)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self._observe_flush(len(batch), started, ok=True)
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
            self._written(len(batch))

    def _take(self, batch: list[tuple[Draft, asyncio.Future[None]]]) -> list[Any]:
        """``batch`` with as many queued records added as fit."""
        more = self._queued[: self.settings.max_batch - len(batch)]
        del self._queued[: len(more)]
        return batch + more

    async def _commit(self, batch: list[tuple[Draft, asyncio.Future[None]]]) -> None:
        """Commit ``batch``. SQLite: on the loop whenever no other process is writing (it
        holds the lock a fraction of a millisecond: the loop runs other requests meanwhile,
        and the batch takes in their records), on a thread only after a few milliseconds
        (``vault.store.writer.INLINE_WAIT``)."""
        if not self.store.writes_now:
            await self.store.append_async([d for d, _ in batch])
            return

        def drafts() -> list[Draft]:
            batch[:] = self._take(batch)
            return [d for d, _ in batch]

        await self.store.append_soon(drafts)

    def _observe_flush(self, records: int, started: float, *, ok: bool) -> None:
        if self.observer is not None:
            self.observer.flushed(records, time.perf_counter() - started, ok)

    def emit(self, event: LifecycleEvent) -> None:
        """``EventSink``: append a lifecycle event now, in the caller's thread."""
        self.store.append([(event_record(event), event.at)])
        self._unsigned += 1

    # -- checkpoints -----------------------------------------------------------------------

    def _written(self, records: int) -> None:
        self._unsigned += records
        if self._checkpointing is not None:
            return
        waited = time.monotonic() - self._signed_at
        if (
            self._unsigned >= self.settings.checkpoint_records
            or waited >= self.settings.checkpoint_seconds
        ):
            self._start_checkpoint()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.settings.checkpoint_seconds - waited, self._start_checkpoint
            )

    def _start_checkpoint(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._checkpointing is None:
            self._checkpointing = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        covered = self._unsigned
        ok = True
        try:
            await self.checkpoint()
            self._unsigned -= covered
        except Exception as exc:
            ok = False
            log.warning("audit checkpoint failed: %s", type(exc).__name__)
        finally:
            self._signed_at = time.monotonic()
            self._checkpointing = None
            if self.observer is not None:
                self.observer.checkpointed(ok)
        if self._unsigned > 0:
            self._written(0)

    def _draft_checkpoint(
        self, head: Head, last: StoredCheckpoint | None
    ) -> tuple[bytes, int, float] | None:
        """The body of a checkpoint over ``head`` after ``last``, its ``prev_seq`` and time."""
        prev_seq = last.seq if last is not None else 0
        if head.seq <= prev_seq:
            return None  # nothing new to sign
        at = self._clock()
        body = encode(
            Checkpoint(
                seq=head.seq,
                at=timestamp(at),
                hash=head.hash.hex(),
                prev_seq=prev_seq,
                prev=checkpoint_digest(last.body) if last is not None else ZERO_HASH.hex(),
                key=SIGNING_KEY,
            )
        )
        return body, prev_seq, at

    async def checkpoint(self) -> int | None:
        """Sign the chain's head; its sequence number, or None if nothing needed signing (or
        another process signed first)."""
        head, last = await self.store.db.run(self._head_and_last)
        draft = self._draft_checkpoint(head, last)
        if draft is None:
            return None
        body, prev_seq, at = draft
        signature = await self.keys.sign(body)
        added = await self.store.db.run(
            functools.partial(self.store.add_checkpoint, head.seq, prev_seq, at, body, signature)
        )
        return head.seq if added else None

    def checkpoint_sync(self) -> int | None:
        head, last = self._head_and_last()
        draft = self._draft_checkpoint(head, last)
        if draft is None:
            return None
        body, prev_seq, at = draft
        signature = self.keys.sign_sync(body)
        added = self.store.add_checkpoint(head.seq, prev_seq, at, body, signature)
        return head.seq if added else None

    def _head_and_last(self) -> tuple[Head, StoredCheckpoint | None]:
        return self.store.head(), self.store.last_checkpoint()

    # -- retention -------------------------------------------------------------------------

    def prune(
        self, actor: str, now: float | None = None, *, dry_run: bool = False
    ) -> Pruned | None:
        """Remove the records older than the retention, up to the newest checkpoint signed
        before the cut-off (the anchor, which stays); record the prune in the chain.
        ``dry_run``: only say how far it would remove."""
        now = self._clock() if now is None else now
        anchor = self.store.anchor_before(now - self.settings.retention_days * DAY)
        first = self.store.first_seq()
        if anchor is None or first is None or anchor.seq < first:
            return None
        if dry_run:
            return Pruned(anchor.seq, None)
        event = LifecycleEvent(
            "audit.prune",
            actor,
            details={
                "through": anchor.seq,
                "anchor": checkpoint_digest(anchor.body),
                "retention_days": self.settings.retention_days,
            },
            at=now,
        )
        seq = self.store.append([(event_record(event), now)], prune_through=anchor.seq)
        return Pruned(anchor.seq, seq)

    def close(self) -> None:
        """Sign what this process left unsigned (best effort: the next checkpoint would)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._unsigned > 0:
            try:
                self.checkpoint_sync()
            except Exception as exc:
                log.warning("final audit checkpoint failed: %s", type(exc).__name__)
        self.store.close()
