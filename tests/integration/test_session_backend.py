"""``make test`` runs the integration and end-to-end tests on both backends: the session's
database really is the one ``VAULT_TEST_DATABASE`` names, for this process and its servers."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.hsm


def test_the_session_database_is_the_selected_backend(runtime) -> None:  # type: ignore[no-untyped-def]
    expected = os.environ.get("VAULT_TEST_DATABASE", "sqlite")
    assert runtime.db.dialect == expected
    assert os.environ["VAULT_DATABASE_URL"].startswith(expected)
