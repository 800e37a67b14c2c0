"""Bringing the store's schema to the newest revision with Alembic.

A module of its own so that only what creates or upgrades a store (node set-up, the CLI)
loads Alembic and its templates; the running services open the store through store.db alone.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from .db import engine_for, normalise_url


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the store's schema to the newest revision (idempotent)."""
    cfg = alembic_config(url)
    with engine_for(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
