"""Alembic environment: migrates the engine handed over, or the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from api import db
from api.tables import Base

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        url = config.get_main_option("sqlalchemy.url") or "sqlite:///dowguard.db"
        engine = db.make_engine(url)
    write = engine.execution_options(**{db.WRITE_OPTION: True})
    with write.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot alter most column properties in place.
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
