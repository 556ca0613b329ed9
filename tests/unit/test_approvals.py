"""Dual control: two valid, distinct, unexpired approvals over exactly this action, used once;
and the registry's destructive changes run only under them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from tests.unit.fake_hsm import FakeHsm, registry_over
from vault import officers as credentials
from vault.approvals import Action, Authority, DualControl
from vault.errors import BadRequest, Forbidden
from vault.events import LifecycleEvent
from vault.policy import Officer
from vault.registry import KeyRegistry
from vault.store.approvals import ApprovalStore
from vault.store.tables import approvals as approvals_table

KEYS = {
    "alice": ed25519.Ed25519PrivateKey.generate(),
    "bob": ec.generate_private_key(ec.SECP256R1()),
    "carol": ed25519.Ed25519PrivateKey.generate(),
}


@dataclass
class Recorder:
    events: list[LifecycleEvent] = field(default_factory=list)

    def emit(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    registry: KeyRegistry
    control: DualControl
    events: Recorder
    clock: Clock
    hsm: FakeHsm

    def sign(self, officer: str) -> credentials.OfficerCredential:
        return credentials.OfficerCredential(officer, KEYS[officer])

    def request(self, action: Action, officer: str = "alice") -> str:
        return self.control.request(action, officer, self.sign(officer).sign).id

    def approve(self, request_id: str, officer: str = "bob") -> None:
        self.control.approve(request_id, officer, self.sign(officer).sign)

    def approved(self, action: Action) -> str:
        made = self.request(action)
        self.approve(made)
        return made


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    hsm = FakeHsm()
    events = Recorder()
    clock = Clock()
    registry = registry_over(hsm, f"sqlite:///{tmp_path / 'vault.db'}")
    officers = {
        name: Officer(name, key.public_key()) for name, key in KEYS.items() if name != "carol"
    }
    control = DualControl(ApprovalStore(registry.store.db), officers, events, 600, clock)
    registry.events = events
    registry.dual_control = control
    yield World(registry, control, events, clock, hsm)
    registry.store.db.dispose()


def officer(name: str, approval: str | None = None) -> Authority:
    return Authority(f"officer:{name}", approval)


def deletable(world: World, name: str = "k") -> None:
    world.registry.create_sync(name, "aes256-gcm96")
    world.registry.configure_sync(name, deletion_allowed=True)


# -- the approval itself -------------------------------------------------------------------------


def test_two_distinct_officers_allow_the_action_once(world: World) -> None:
    action = Action.delete_key("k")
    made = world.approved(action)
    assert world.control.check(made, action) == ("alice", "bob")
    with world.control.authorize(made, action, "officer:alice") as by:
        assert by == ("alice", "bob")
    with pytest.raises(Forbidden, match="already used"):
        world.control.check(made, action)
    assert world.events.kinds() == ["approval.request", "approval.grant"]
    assert world.events.events[0].actor == "officer:alice"


def test_one_approval_is_not_enough(world: World) -> None:
    action = Action.delete_key("k")
    made = world.request(action)
    with pytest.raises(Forbidden, match=r"approval .* has 1"):
        world.control.check(made, action)


def test_no_approval_at_all_says_what_is_needed(world: World) -> None:
    with pytest.raises(Forbidden, match="needs the approvals of 2 different officers"):
        world.control.check(None, Action.delete_key("k"))
    with pytest.raises(Forbidden, match="no approval request"):
        world.control.check("feedfacefeedface", Action.delete_key("k"))


def test_the_same_officer_cannot_approve_twice(world: World) -> None:
    made = world.request(Action.delete_key("k"))
    with pytest.raises(BadRequest, match="already approved"):
        world.approve(made, "alice")


def test_an_undeclared_officer_cannot_approve(world: World) -> None:
    made = world.request(Action.delete_key("k"))
    with pytest.raises(Forbidden, match="not an officer"):
        world.approve(made, "carol")


def test_a_signature_by_another_key_is_refused(world: World) -> None:
    made = world.request(Action.delete_key("k"))
    with pytest.raises(Forbidden, match="does not verify"):
        world.control.approve(made, "bob", world.sign("alice").sign)


def test_an_approval_covers_exactly_its_action(world: World) -> None:
    made = world.approved(Action.trim_key("k", 2))
    for other in (Action.trim_key("k", 3), Action.trim_key("j", 2), Action.delete_key("k")):
        with pytest.raises(Forbidden, match=r"is for key\.trim k"):
            world.control.check(made, other)


def test_approvals_expire(world: World) -> None:
    action = Action.delete_key("k")
    made = world.request(action)
    world.clock.now += 601
    with pytest.raises(Forbidden, match="expired"):
        world.approve(made)
    fresh = world.approved(action)
    world.clock.now += 601
    with pytest.raises(Forbidden, match="expired"):
        world.control.check(fresh, action)


def test_a_forged_approval_row_does_not_count(world: World) -> None:
    """Whoever can write to the database still cannot approve: the signature is checked."""
    action = Action.delete_key("k")
    made = world.approved(action)
    with world.registry.store.db.engine.begin() as conn:
        conn.execute(
            update(approvals_table)
            .where(approvals_table.c.officer == "bob")
            .values(signature=b"\x00" * 64)
        )
    with pytest.raises(Forbidden, match="has 1"):
        world.control.check(made, action)


def test_an_officer_removed_from_the_policies_stops_counting(world: World) -> None:
    action = Action.delete_key("k")
    made = world.approved(action)
    world.control.officers = {"alice": world.control.officers["alice"]}
    with pytest.raises(Forbidden, match="has 1"):
        world.control.check(made, action)


def test_a_failed_action_leaves_the_approval_usable(world: World) -> None:
    action = Action.delete_key("k")
    made = world.approved(action)
    with pytest.raises(RuntimeError), world.control.authorize(made, action, "officer:bob"):
        raise RuntimeError("the HSM went away")
    assert world.control.check(made, action) == ("alice", "bob")


@given(flip=st.integers(min_value=0, max_value=10_000))
def test_any_change_to_the_signed_description_breaks_the_signature(flip: int) -> None:
    from vault.approvals import ApprovalRequest

    request = ApprovalRequest("0123456789abcdef", Action.trim_key("k", 3), "alice", 1e9, 1e9 + 60)
    message = request.message()
    signature = credentials.sign(KEYS["alice"], message)
    officer = Officer("alice", KEYS["alice"].public_key())
    assert credentials.verify(officer, signature, message)
    index = flip % len(message)
    tampered = message[:index] + bytes([message[index] ^ 1]) + message[index + 1 :]
    assert not credentials.verify(officer, signature, tampered)


# -- the registry's destructive changes ----------------------------------------------------------


def test_delete_is_refused_with_one_approval_and_done_with_two(world: World) -> None:
    deletable(world)
    made = world.request(Action.delete_key("k"))
    with pytest.raises(Forbidden):
        world.registry.delete_sync("k", by=officer("alice", made))
    assert world.registry.get_sync("k").name == "k"
    world.approve(made)
    world.registry.delete_sync("k", by=officer("alice", made))
    assert world.hsm.ops.store == {}
    deleted = world.events.events[-1]
    assert (deleted.kind, deleted.actor, deleted.key) == ("key.delete", "officer:alice", "k")
    assert deleted.details["approved_by"] == "alice,bob"


def test_lowering_min_decryption_needs_approval_raising_does_not(world: World) -> None:
    world.registry.create_sync("k", "aes256-gcm96")
    world.registry.rotate_sync("k")
    world.registry.configure_sync("k", min_decryption_version=2, by=officer("alice"))
    with pytest.raises(Forbidden):
        world.registry.configure_sync("k", min_decryption_version=1, by=officer("alice"))
    made = world.approved(Action.lower_min_decryption("k", 1))
    key = world.registry.configure_sync("k", min_decryption_version=1, by=officer("bob", made))
    assert key.min_decryption_version == 1


def test_trim_needs_approval_and_destroys_the_versions_below(world: World) -> None:
    world.registry.create_sync("k", "aes256-gcm96")
    for _ in range(3):
        world.registry.rotate_sync("k")
    world.registry.configure_sync(
        "k", min_decryption_version=3, min_encryption_version=3, by=officer("alice")
    )
    old = world.registry.get_sync("k").versions
    with pytest.raises(Forbidden):
        world.registry.trim_sync("k", 3, by=officer("alice"))
    made = world.approved(Action.trim_key("k", 3))
    key, gone = world.registry.trim_sync("k", 3, by=officer("alice", made))
    assert gone == [1, 2]
    assert sorted(key.versions) == [3, 4]
    assert key.min_available_version == 3
    assert set(world.hsm.ops.store) == {
        old[n].object_id(role) for n in (3, 4) for role in old[n].roles(key.type)
    }


def test_an_exempt_dev_service_needs_no_approval(world: World) -> None:
    deletable(world)
    world.registry.delete_sync("k", by=Authority("service:transit-conformance", exempt=True))
    assert world.events.events[-1].details["dual_control"] == "exempt"
