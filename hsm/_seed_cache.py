"""A bounded, least-recently-used table of OTP seeds already unwrapped in this session.

Each entry is a session object of the HSM (sensitive, never extractable, MAC only: the
verification template), named by the wrap key's id and a digest of the whole seed blob whose
tag or binding the HSM verified, with the digests of the identity bindings it verified for
that blob. Only handles are kept here — never a seed's bytes, which the token never gives
out. The table knows nothing of PKCS#11: whoever drops an entry destroys its object.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

H = TypeVar("H")

# A keyed blob authenticates for one identity only; a few leave room for a legacy blob
# presented alike by several callers without letting one entry grow without bound.
MAX_BINDINGS = 4


@dataclass(slots=True)
class SeedEntry(Generic[H]):
    handle: H
    bindings: list[bytes] = field(default_factory=list)

    def verified(self, binding: bytes) -> bool:
        """Whether the HSM verified ``binding`` for this blob (constant-time per digest)."""
        found = False
        for known in self.bindings:
            found |= hmac.compare_digest(known, binding)
        return found

    def add(self, binding: bytes) -> None:
        if not self.verified(binding):
            self.bindings.append(binding)
            del self.bindings[:-MAX_BINDINGS]


class SeedCache(Generic[H]):
    """At most ``size`` entries; ``size`` 0 keeps nothing. Methods that drop entries return
    their handles, for the caller to destroy."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("the seed cache size must be 0 or more")
        self.size = size
        self._entries: OrderedDict[tuple[bytes, bytes], SeedEntry[H]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, wrap_key_id: bytes, blob: bytes) -> SeedEntry[H] | None:
        """The entry, now the most recently used one."""
        entry = self._entries.get((wrap_key_id, blob))
        if entry is not None:
            self._entries.move_to_end((wrap_key_id, blob))
        return entry

    def put(self, wrap_key_id: bytes, blob: bytes, handle: H, binding: bytes) -> list[H]:
        """Keep ``handle`` for the blob with ``binding`` verified; the handles pushed out
        (the least recently used beyond the bound, or one this blob had before)."""
        if self.size == 0:
            return [handle]
        out = []
        old = self._entries.pop((wrap_key_id, blob), None)
        if old is not None:
            out.append(old.handle)
        self._entries[(wrap_key_id, blob)] = SeedEntry(handle, [binding])
        while len(self._entries) > self.size:
            _, evicted = self._entries.popitem(last=False)
            out.append(evicted.handle)
        return out

    def drop(self, wrap_key_id: bytes, blob: bytes) -> H | None:
        entry = self._entries.pop((wrap_key_id, blob), None)
        return None if entry is None else entry.handle

    def drop_wrap_key(self, wrap_key_id: bytes) -> list[H]:
        """Every entry unwrapped under this wrap key (its version is being destroyed)."""
        keys = [k for k in self._entries if k[0] == wrap_key_id]
        return [self._entries.pop(k).handle for k in keys]

    def clear(self) -> list[H]:
        handles = [e.handle for e in self._entries.values()]
        self._entries.clear()
        return handles
