"""``hsm-vault``: the security officers' and operators' tool (``api.cli`` adds ``serve``).

Commands live in one module per subject; importing them registers them on :data:`main`.
"""

from __future__ import annotations

from vault.cli import _approvals, _audit, _keys, _token, _tokens  # noqa: F401 - they register
from vault.cli._common import settings_or_exit
from vault.cli._root import main

__all__ = ["main", "settings_or_exit"]
