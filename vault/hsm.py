"""The HSM as the domain sees it: jobs go to the adapter's runner (``hsm/``), each request's
HSM work is bounded in time, and the adapter's errors become the domain's here, in one place.

The domain composes *jobs* — plain functions over :class:`hsm.HsmOps` — so that one request
costs one hand-over to the HSM however many calls it makes. A job may raise the domain's own
errors; they come back unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from hsm import HsmOps, JobRunner
from hsm import errors as hsm_errors
from vault.errors import BadRequest, HsmUnavailable, InvalidCiphertext, VaultError

T = TypeVar("T")
log = logging.getLogger("vault.hsm")

DEFAULT_TIMEOUT = 5.0  # seconds a request may wait for the HSM


def translate(exc: hsm_errors.HsmError) -> VaultError:
    """The domain's error for one of the adapter's."""
    if isinstance(exc, hsm_errors.AuthenticationFailed):
        return InvalidCiphertext()
    if isinstance(exc, hsm_errors.InputRejected):
        return BadRequest(str(exc))
    if isinstance(exc, hsm_errors.LoginRefused | hsm_errors.ModuleUnusable):
        log.error("the HSM cannot be used: %s", exc)
        return HsmUnavailable()
    if isinstance(exc, hsm_errors.MechanismUnsupported):
        return HsmUnavailable("the HSM does not support this operation")
    return HsmUnavailable()


class Hsm:
    """The runner, with time limits and error translation."""

    def __init__(self, runner: JobRunner, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.runner = runner
        self.timeout = timeout

    async def run(self, job: Callable[[HsmOps], T], *, calls: int = 1) -> T:
        """Run ``job``; ``calls`` is about how many HSM calls it makes (many: never inline).
        A job that runs inline has no time limit to keep: it is done before anything could
        interrupt it."""
        try:
            ran, value = self.runner.run_now(job, calls=calls)
            if ran:
                return value  # type: ignore[return-value]
            async with asyncio.timeout(self.timeout):
                return await self.runner.run(job, calls=calls)
        except TimeoutError:
            raise HsmUnavailable("the HSM did not answer in time") from None
        except hsm_errors.HsmError as exc:
            raise translate(exc) from None

    def run_sync(self, job: Callable[[HsmOps], T], *, fresh: bool = False) -> T:
        """For threads that may block (the officers' tool, start-up work, key changes).
        ``fresh``: the job sees every object on the token, whichever process made it."""
        try:
            return self.runner.run_sync(job, fresh=fresh)
        except hsm_errors.HsmError as exc:
            raise translate(exc) from None

    def healthy(self) -> bool:
        return self.runner.healthy()

    def close(self) -> None:
        self.runner.close()
