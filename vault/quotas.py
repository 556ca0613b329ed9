"""Quotas from the policies: at most N operations per window, per service or per subject.

``policies/*.toml``::

    [quotas.share-retrieval]        # the name keys the counters: keep it when editing
    keys = ["backup-share"]         # key names or patterns (default every key)
    operations = ["decrypt"]
    services = ["recovery-service"] # default every service
    per = "subject"                 # or "service"
    limit = 3
    window = "24h"                  # seconds, or "1s", "1m", "24h", "1d"
    kind = "sliding"                # or "fixed" (windows aligned to the epoch: whole
                                    # seconds, minutes, days in UTC)

A sliding window admits a request if fewer than ``limit`` were admitted in the ``window``
seconds before it (exact: the times are kept, so its limit is at most 1,000); a fixed one
counts per aligned window. A batch counts once per item. ``per = "subject"`` counts per
subject (the field a key's structured ``associated_data`` names, ``vault.subjects``), keyed by
its digest; a request such a quota covers must name its subjects. Counters live in the
database, so they hold across replicas; a request is charged against every rule covering it,
rule by rule, and a refusal leaves the rules already charged as they are (conservative).
Everything here runs before the handler, so a refused request costs no HSM work.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping

from vault.errors import BadRequest, RateLimited
from vault.policy import QuotaRule
from vault.store.quotas import QuotaStore

PRUNE_INTERVAL = 300.0


class QuotaExceeded(RateLimited):
    """Over a quota: ``rule`` names it (for metrics and the audit trail)."""

    def __init__(self, rule: QuotaRule, retry_after: float) -> None:
        per = "subject" if rule.per == "subject" else "service"
        super().__init__(
            f"quota {rule.name!r} exceeded: at most {rule.limit} per {per} "
            f"in {rule.window} seconds",
            retry_after=math.ceil(retry_after),
        )
        self.rule = rule.name


class Quotas:
    def __init__(self, store: QuotaStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._pruned = clock()

    async def charge(
        self,
        rules: tuple[QuotaRule, ...],
        service: str,
        items: int,
        subjects: Mapping[str, int] | None,
    ) -> None:
        """Charge a request of ``items`` operations (``subjects``: each subject's digest and
        how many of the items name it) against ``rules``; raise ``QuotaExceeded``."""
        now = self._clock()
        for rule in rules:
            if rule.per == "subject":
                if not subjects or sum(subjects.values()) != items:
                    raise BadRequest(
                        f"quota {rule.name!r} counts per subject: every associated_data "
                        "must name one, in the key's declared form"
                    )
                scopes: Mapping[str, int] = subjects
            else:
                scopes = {service: items}
            for scope, cost in scopes.items():
                wait = await self.store.db.run(
                    functools.partial(self.store.charge, rule, scope, cost, now)
                )
                if wait is not None:
                    raise QuotaExceeded(rule, wait)
        if now - self._pruned > PRUNE_INTERVAL:
            self._pruned = now
            await self.store.db.run(lambda: self.store.prune(now))
