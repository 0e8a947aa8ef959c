"""Alembic's entry point for CandleThrob's schema: run by ``CandleThrob.warehouse.migrate``.

Online, the caller hands over its connection (inside its transaction, under its
lock). Offline (``sql=True``), the SQL for a dialect is written out instead:
that is how the Oracle DDL is checked without an Oracle server.
"""

from alembic import context

from CandleThrob.warehouse.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    context.configure(dialect_name=config.attributes["dialect"], target_metadata=metadata, literal_binds=True,
                      output_buffer=config.attributes.get("output"))
else:
    # SQLite alters tables by copying them ("batch" mode); the others alter in place.
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
