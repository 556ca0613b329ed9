"""The HSM runner's own behaviour, over a stand-in session: what it reports to its observer,
and that nothing slow (re-reading the token, opening a session) runs on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pkcs11.exceptions as p11e
import pytest

from hsm._faults import FaultSwitch
from hsm._thread import HsmThread
from hsm.errors import HsmError, HsmUnavailable, ObjectMissing


class Session:
    """Stands in for the logged-in session: records on which thread it was re-read."""

    def __init__(self) -> None:
        self.reinitialized_on: list[str] = []
        self.closed = 0

    def reinitialize(self) -> None:
        self.reinitialized_on.append(threading.current_thread().name)

    def close(self) -> None:
        self.closed += 1


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def job_done(self, error: HsmError | None) -> None:
        self.events.append(("job", type(error).__name__ if error else None))

    def session_opened(self) -> None:
        self.events.append(("opened", None))

    def session_closed(self, *, lost: bool) -> None:
        self.events.append(("closed", lost))


def _runner(session: Session, **kwargs: Any) -> HsmThread:
    runner = HsmThread(lambda: session, retry_interval=0.0, **kwargs)
    deadline = time.monotonic() + 10
    while not runner.healthy():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return runner


def test_reading_the_token_afresh_never_runs_on_the_event_loop() -> None:
    session = Session()
    runner = _runner(session, inline_budget=1.0)  # every small job may run inline
    attempts: list[str] = []

    def job(ops: Any) -> int:
        attempts.append(threading.current_thread().name)
        if not session.reinitialized_on:
            raise ObjectMissing()  # another process made the key: not in this view yet
        return 7

    try:
        assert asyncio.run(runner.run(job)) == 7
    finally:
        runner.close()
    assert attempts[0] == threading.current_thread().name  # tried inline first
    assert session.reinitialized_on == ["hsm"]  # the slow part: on the HSM thread
    assert attempts[1:] == ["hsm", "hsm"]  # found missing there too, then found after


def test_the_observer_hears_jobs_errors_and_sessions() -> None:
    recorder = Recorder()
    runner = _runner(Session(), inline_budget=0, observer=recorder)

    def device_error(ops: Any) -> None:
        raise p11e.DeviceError()

    try:
        assert runner.run_sync(lambda ops: 1) == 1
        with pytest.raises(HsmUnavailable):
            runner.run_sync(device_error)
        assert runner.run_sync(lambda ops: 2) == 2  # a new session, logged in again
    finally:
        runner.close()
    assert recorder.events == [
        ("opened", None),
        ("job", None),
        ("closed", True),
        ("job", "HsmUnavailable"),
        ("opened", None),
        ("job", None),
        ("closed", False),  # closed at the end
    ]


def test_the_fault_switch_fails_jobs_as_the_token_would(tmp_path: Any) -> None:
    path = tmp_path / "fault"
    session = Session()
    runner = _runner(session, inline_budget=0, faults=FaultSwitch(str(path)))
    try:
        assert runner.run_sync(lambda ops: 1) == 1
        path.write_text("device-error\n")
        for _ in range(3):  # sticky: the session cannot be opened again either
            with pytest.raises(HsmUnavailable):
                runner.run_sync(lambda ops: 1)
        path.unlink()
        assert runner.run_sync(lambda ops: 1) == 1
        path.write_text("session-closed a\n")
        closed = session.closed
        assert runner.run_sync(lambda ops: 1) == 1  # the stand-in does not mind being closed
        assert session.closed == closed + 1
        assert runner.run_sync(lambda ops: 1) == 1  # once per tag
        assert session.closed == closed + 1
        path.write_text("logged-out b\n")
        with pytest.raises(HsmUnavailable):
            runner.run_sync(lambda ops: 1)
        assert runner.run_sync(lambda ops: 1) == 1
    finally:
        runner.close()
