"""One lock and one thread through which every PKCS#11 call of a process passes.

python-pkcs11 calls ``C_Initialize(NULL)``, promising the module that the application will
never call it from two threads at once; SoftHSM2 segfaults when that promise is broken.
So every job runs while holding ``_lock``, one after the other.

Where a job runs:
- on the HSM thread, by default: the event loop never waits for the HSM. Jobs that arrive
  while one runs are drained together and their results handed back with one wake-up per
  event loop, so a busy server pays for the thread hop once per burst;
- inline, on the caller's thread, when the job makes few PKCS#11 calls (the caller says how
  many), the lock is free at that instant, and the HSM has recently been fast: the fastest
  time per call among the last 32 jobs under ``inline_budget`` (~30 µs for SoftHSM2). A
  thread hop costs more than such a call. A slow (network) HSM is over the budget on every
  call, so every job goes to the thread again; ``inline_budget=0`` turns the fast path off.

Nothing here stops the process: the session is opened in the background, and while the token
cannot be reached every job fails with ``HsmUnavailable`` and the session is re-opened with
back-off. A refused PIN is not tried again until the PIN source gives another one (a real
HSM locks its user after a few wrong PINs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from hsm._errors import SESSION_LOST, PKCS11Error, translate
from hsm._faults import FaultSwitch
from hsm.errors import HsmError, HsmUnavailable, LoginRefused, ObjectMissing
from hsm.interface import HsmObserver, HsmOps

T = TypeVar("T")
log = logging.getLogger("hsm")

_Outcome = tuple[bool, Any]
_WINDOW = 32
_Job = tuple[Callable[[Any], Any], "asyncio.Future[Any] | concurrent.futures.Future[Any]", Any, int]
# A job of at most this many PKCS#11 calls may run inline (an OTP check is about six).
INLINE_MAX_CALLS = 8
_NOTHING = object()
_ON_THREAD: Any = object()  # an inline job that must run on the HSM thread after all


def _settle(items: list[tuple[asyncio.Future[Any], _Outcome]]) -> None:
    for future, (ok, value) in items:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class HsmThread:
    """Owns the PKCS#11 session; re-opens it after the token or session is lost."""

    def __init__(
        self,
        connect: Callable[[], Any],
        retry_interval: float = 1.0,
        inline_budget: float = 150e-6,
        *,
        credential: Callable[[], object] | None = None,
        observer: HsmObserver | None = None,
        faults: FaultSwitch | None = None,
    ) -> None:
        self._connect = connect
        self._observer = observer
        self._faults = faults  # tests only (hsm/_faults.py)
        # What the session logs in with (a PIN's digest): a refused one is not tried again.
        self._credential = credential or (lambda: None)
        self._refused: object = _NOTHING
        self._lock = threading.Lock()
        self._inline_budget = inline_budget
        # Decided afresh every _WINDOW small jobs from the fastest of them: waiting for the
        # GIL inflates single timings under load, but never the best of a window, and a
        # network HSM's round trip is in every one of them.
        self._inline = inline_budget > 0
        self._window_best = float("inf")
        self._window_count = 0
        self._retry_interval = retry_interval
        self._ops: Any = None
        self._last_attempt = float("-inf")
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._healthy = False
        self.last_error: HsmError | None = None
        self._thread = threading.Thread(target=self._main, name="hsm", daemon=True)
        self._thread.start()

    # -- caller side -----------------------------------------------------------------------

    def run_now(self, job: Callable[[HsmOps], T], *, calls: int = 1) -> tuple[bool, T | None]:
        """Run ``job`` inline if it may (see the module's doc): ``(True, result)``, or
        ``(False, None)`` when it must go to the HSM thread (``run``)."""
        if (
            calls <= INLINE_MAX_CALLS
            and self._inline
            and self._ops is not None
            and self._lock.acquire(blocking=False)
        ):
            try:
                ok, value = self._timed(job, calls, inline=True)
            finally:
                self._lock.release()
            if ok:
                return True, value
            if value is not _ON_THREAD:
                raise value
        return False, None

    async def run(self, job: Callable[[HsmOps], T], *, calls: int = 1) -> T:
        """Run ``job``. A caller that stops waiting (its time limit passed) cancels the
        future: a job that has not started by then is skipped."""
        ran, value = self.run_now(job, calls=calls)
        if ran:
            return value  # type: ignore[return-value]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((job, future, loop, calls))
        return await future

    def run_sync(self, job: Callable[[HsmOps], T], *, fresh: bool = False) -> T:
        """For threads that may block (CLI, database workers): wait for the lock, run here.
        ``fresh``: read the token afresh first (``C_Finalize`` + ``C_Initialize``), so that the
        job sees every object, whichever process made it: SoftHSM 2.6 stops showing a process
        the objects others create once it has written to the token itself."""
        with self._lock:
            if fresh:
                self._reload()
            ok, value = self._execute(job)
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def healthy(self) -> bool:
        return self._healthy

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)

    # -- HSM thread ------------------------------------------------------------------------

    def _main(self) -> None:
        with self._lock:
            self._reconnect()
        while True:
            first = self._queue.get()
            if first is None:
                break
            burst = [first]
            stop = False
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                burst.append(item)
            self._run_burst(burst)
            if stop:
                break
        self._set_healthy(False, lost=False)
        self._disconnect()

    def _run_burst(self, burst: list[_Job]) -> None:
        by_loop: dict[Any, list[tuple[Any, _Outcome]]] = defaultdict(list)
        for job, future, loop, calls in burst:
            if future.cancelled():
                continue  # the caller gave up (its time limit passed): nobody wants the result
            with self._lock:
                outcome = self._timed(job, calls)
            if loop is None:
                ok, value = outcome
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            else:
                by_loop[loop].append((future, outcome))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed while the job ran
                loop.call_soon_threadsafe(_settle, items)

    def _timed(self, job: Callable[[Any], Any], calls: int, *, inline: bool = False) -> _Outcome:
        """Run a job; every ``_WINDOW`` jobs, decide from the fastest time per PKCS#11 call
        among them whether jobs may run inline."""
        start = time.perf_counter()
        outcome = self._execute(job, inline=inline)
        elapsed = (time.perf_counter() - start) / max(calls, 1)
        self._window_best = min(self._window_best, elapsed)
        self._window_count += 1
        if self._window_count >= _WINDOW:
            self._inline = self._inline_budget > 0 and self._window_best < self._inline_budget
            self._window_best = float("inf")
            self._window_count = 0
        return outcome

    def _execute(self, job: Callable[[Any], Any], *, inline: bool = False) -> _Outcome:
        outcome = self._attempt(job, inline=inline)
        if self._observer is not None and outcome[1] is not _ON_THREAD:
            ok, value = outcome
            self._observer.job_done(None if ok or not isinstance(value, HsmError) else value)
        return outcome

    def _attempt(
        self, job: Callable[[Any], Any], *, retried: bool = False, inline: bool = False
    ) -> _Outcome:
        """Run one job. Exceptions of the token become :mod:`hsm.errors`; any other exception
        the job raises (the caller's own) is handed back unchanged. Opening a session or
        reading the token afresh can take seconds (retries with back-off): an inline job that
        needs either goes to the HSM thread instead (``_ON_THREAD``), never blocking the
        event loop."""
        if self._ops is None:
            if inline:
                return False, _ON_THREAD
            if not self._reconnect():
                return False, self.last_error or HsmUnavailable()
        try:
            if self._faults is not None:
                self._faults.before_job(self._ops)
            return True, job(self._ops)
        except ObjectMissing as exc:
            if retried:
                log.error("an HSM object of a key version is missing from the token")
                return False, exc
            if inline:
                return False, _ON_THREAD
            log.info("HSM object not in view; reading the token afresh")
            self._reload()
            return self._attempt(job, retried=True)
        except HsmError as exc:
            return False, exc
        except SESSION_LOST as exc:
            log.warning("HSM session lost (%s); will re-open", type(exc).__name__)
            self._drop_session(lost=True)
            return False, HsmUnavailable()
        except PKCS11Error as exc:
            return False, translate(exc)
        except Exception as exc:
            return False, exc

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now - self._last_attempt < self._retry_interval:
            return False
        self._last_attempt = now
        try:
            credential = self._credential()
        except Exception as exc:  # the PIN file cannot be read now: try again later
            log.warning("HSM credential unavailable: %s", type(exc).__name__)
            self.last_error = HsmUnavailable("HSM credential unavailable")
            return False
        if credential == self._refused:
            return False
        try:
            if self._faults is not None:
                self._faults.before_open()
            self._ops = self._connect()
        except BaseException as exc:
            error = translate(exc)
            if isinstance(error, LoginRefused):
                self._refused = credential
            log.warning("HSM session could not be opened: %s", type(error).__name__)
            self.last_error = error
            self._ops = None
            self._set_healthy(False, lost=False)
            return False
        log.info("HSM session opened")
        self._refused = _NOTHING
        self.last_error = None
        self._healthy = True
        if self._observer is not None:
            self._observer.session_opened()
        return True

    def _set_healthy(self, healthy: bool, *, lost: bool) -> None:
        was, self._healthy = self._healthy, healthy
        if was and not healthy and self._observer is not None:
            self._observer.session_closed(lost=lost)

    def _reload(self) -> None:
        # Every handle of the old session dies with it, and the new one hands the same numbers
        # out again to other objects: the old ops (with its cached handles) is dropped before
        # the library is re-initialized and never used again (softhsm/README.md).
        if self._ops is None:  # the library may still hold an old view: open, then re-read
            self._last_attempt = float("-inf")
            if not self._reconnect():
                return
        ops = self._ops
        self._ops = None
        self._set_healthy(False, lost=False)
        if ops is not None:
            try:
                ops.reinitialize()
            except Exception:
                log.debug("HSM library re-initialization failed", exc_info=True)
        self._last_attempt = float("-inf")
        self._reconnect()

    def _drop_session(self, *, lost: bool) -> None:
        self._set_healthy(False, lost=lost)
        self._disconnect()
        self._ops = None
        self._last_attempt = float("-inf")

    def _disconnect(self) -> None:
        ops = self._ops
        if ops is not None:
            try:
                ops.close()
            except Exception:
                log.debug("HSM session close failed", exc_info=True)
