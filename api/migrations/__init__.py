"""Alembic migrations of the SQL schema, runnable from an installed package.

The Alembic configuration is built in code from this directory, so
``upgrade`` works without an ini file; ``alembic.ini`` here serves the
``alembic`` command line during development.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config for this directory, bound to ``engine`` if given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    if engine is not None:
        url = engine.url.render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run migrations up to ``revision`` on ``engine``'s database."""
    command.upgrade(alembic_config(engine), revision)


def ensure_schema(engine: Engine) -> None:
    """Upgrade to head; a database made by ``create_all`` is stamped first."""
    tables = set(inspect(engine).get_table_names())
    cfg = alembic_config(engine)
    if "alembic_version" not in tables and "alerts" in tables:
        # Made from the models of this version: nothing to migrate, only to
        # record which revision it is.
        logger.info("schema adopted url=%s", engine.url.render_as_string())
        command.stamp(cfg, "head")
        return
    command.upgrade(cfg, "head")
