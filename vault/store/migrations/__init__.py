"""Alembic migrations, run programmatically (``hsm-vault migrate`` and at bootstrap)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

_HERE = Path(__file__).resolve().parent


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
