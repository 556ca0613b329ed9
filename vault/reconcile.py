"""Reconcile the registry with the token: what the HSM holds against what the versions name.

Two kinds of drift, both harmless to callers but not to be left alone:

- an **orphan**: an object labelled ``vault:...`` that no version names. A crash between
  creating a version's object and committing its row leaves one (the registry creates the
  object first, precisely so that this is the only way to fail), and so does an HSM that
  was away while a trimmed or deleted version's objects were being destroyed. Repair
  destroys it — after a grace period in which a rotation still committing its row would
  have done so, and only if it is still unnamed then.
- a **lost version**: a version whose object is not on the token (an HSM restored from an
  older backup, an object destroyed by hand). Requests naming it answer 503, never a wrong
  result. Repair forgets the version (after replacing it if it was the latest, so the key
  encrypts again); whatever was encrypted under it is unreadable either way.

Objects not labelled ``vault:`` are another application's: listed, never touched. The audit
chain's own keys (``vault.audit.keys``) are no version's but are never orphans.

The order of reads matters: the versions are read, then the token (afresh: SoftHSM 2.6 can
lose sight of objects other processes made), then the versions again. A version found in
both reads whose object the token lacks is lost; an object named by neither read is an
orphan candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hsm import HsmOps, ObjectInfo
from vault.approvals import Authority
from vault.audit.keys import AUDIT_KEY_IDS
from vault.events import LifecycleEvent
from vault.keys import Key
from vault.registry import KeyRegistry

LABEL_PREFIX = "vault:"
DEFAULT_GRACE = 30.0  # seconds: well over the time a rotation takes to commit its row


@dataclass(frozen=True, slots=True)
class LostVersion:
    key: str
    version: int
    missing: tuple[bytes, ...]  # the object ids the token lacks


@dataclass(slots=True)
class Report:
    keys: int = 0
    versions: int = 0
    objects: int = 0
    orphans: list[ObjectInfo] = field(default_factory=list)
    lost: list[LostVersion] = field(default_factory=list)
    foreign: list[ObjectInfo] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.lost


def expected_ids(key: Key) -> dict[bytes, int]:
    """Every object id the key's versions name, with the version naming it."""
    return {v.object_id(role): n for n, v in key.versions.items() for role in v.roles(key.type)}


class Reconciler:
    def __init__(
        self,
        registry: KeyRegistry,
        *,
        grace: float = DEFAULT_GRACE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry
        self.grace = grace
        self._sleep = sleep

    def objects(self) -> list[ObjectInfo]:
        def job(ops: HsmOps) -> list[ObjectInfo]:
            return ops.objects()

        return self.registry.hsm.run_sync(job, fresh=True)

    def check(self) -> Report:
        before = {k.name: k for k in self.registry.store.all_keys()}
        objects = self.objects()
        after = {k.name: k for k in self.registry.store.all_keys()}
        on_token = {o.key_id for o in objects}
        named = {oid for key in (*before.values(), *after.values()) for oid in expected_ids(key)}
        named |= AUDIT_KEY_IDS
        report = Report(
            keys=len(after),
            versions=sum(len(k.versions) for k in after.values()),
            objects=len(objects),
        )
        for obj in objects:
            if not obj.label.startswith(LABEL_PREFIX):
                report.foreign.append(obj)
            elif obj.key_id not in named:
                report.orphans.append(obj)
        for name, key in sorted(before.items()):
            still = after.get(name)
            for number, version in sorted(key.versions.items()):
                if still is None or still.versions.get(number) != version:
                    continue  # trimmed, deleted or replaced meanwhile
                ids = [version.object_id(role) for role in version.roles(key.type)]
                missing = tuple(i for i in ids if i not in on_token)
                if missing:
                    report.lost.append(LostVersion(name, number, missing))
        return report

    def repair(self, report: Report, by: Authority) -> Report:
        """Fix what ``report`` found, checking each item again first; a new report."""
        if report.orphans and self.grace > 0:
            self._sleep(self.grace)
        again = self.check()
        confirmed = {o.key_id for o in report.orphans}
        # One entry per id: a key pair's two halves share theirs and go together.
        for obj in {o.key_id: o for o in again.orphans if o.key_id in confirmed}.values():
            self._destroy(obj, by)
            again.repaired.append(f"destroyed orphan object {obj.label} ({obj.key_id.hex()})")
        reported = {(v.key, v.version) for v in report.lost}
        for lost in again.lost:
            if (lost.key, lost.version) not in reported:
                continue
            key = self.registry.get_sync(lost.key)
            self.registry.drop_lost_version(key, lost.version, by=by)
            again.repaired.append(f"forgot version {lost.version} of {lost.key} (object missing)")
        final = self.check()
        final.repaired = again.repaired
        return final

    def _destroy(self, obj: ObjectInfo, by: Authority) -> None:
        def job(ops: HsmOps) -> int:
            return ops.destroy(obj.key_id)

        self.registry.hsm.run_sync(job)
        self.registry.events.emit(
            LifecycleEvent(
                "hsm.orphan_destroyed",
                by.actor,
                details={"label": obj.label, "object_id": obj.key_id.hex()},
            )
        )
