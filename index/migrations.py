"""Changes to tables after their first release: `create_all` creates tables, never changes them."""

from __future__ import annotations

from sqlalchemy import Engine, MetaData, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable


def add_column(engine: Engine, table: str, column: str, sql_type: str) -> None:
    """Add `column` to `table` in a database created before it (a no-op once there)."""
    def present() -> bool:
        return any(c["name"] == column for c in inspect(engine).get_columns(table))
    if present():
        return
    try:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
    except DBAPIError:
        if not present():  # else another process opening the database added it first
            raise


def autoincrement_ids(engine: Engine, metadata: MetaData, tables: dict[str, str]) -> None:
    """Rebuild SQLite `tables` created before their ids were AUTOINCREMENT (a no-op elsewhere and
    once done), rows and indexes kept: SQLite otherwise hands the id of a deleted newest row out
    again. Each table's counter starts past its rows and past what its query (`tables[name]`)
    finds the highest id named elsewhere; an id deleted above both cannot be known. One
    transaction per table, holding the write lock, so a crash or a second process opening the
    database at once leaves either the old table or the new one."""
    if engine.dialect.name != "sqlite":
        return

    def done(cursor, name: str) -> bool:
        (sql,) = cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (name,)).fetchone()
        return "AUTOINCREMENT" in sql.upper()

    with engine.connect() as connection:  # a read first: no write lock for a migrated database
        cursor = connection.connection.driver_connection.cursor()
        tables = {name: named for name, named in tables.items() if not done(cursor, name)}
    for name, named in tables.items():
        table = metadata.tables[name]
        scratch = MetaData()  # beside copies of the tables its foreign keys name
        for other in metadata.tables.values():
            other.to_metadata(scratch)
        rebuilt = table.to_metadata(scratch, name=f"{name}_rebuilt")
        columns = ", ".join(c.name for c in table.columns)
        connection = engine.raw_connection()
        sqlite = connection.driver_connection
        isolation, sqlite.isolation_level = sqlite.isolation_level, None  # ours: the whole transaction
        try:
            cursor = sqlite.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                if not done(cursor, name):  # another process may have rebuilt it meanwhile
                    cursor.execute(str(CreateTable(rebuilt).compile(engine)))
                    cursor.execute(f"INSERT INTO {rebuilt.name} ({columns}) SELECT {columns} FROM {name}")
                    cursor.execute(f"DROP TABLE {name}")
                    cursor.execute(f"ALTER TABLE {rebuilt.name} RENAME TO {name}")
                    for index in table.indexes:
                        cursor.execute(str(CreateIndex(index).compile(engine)))
                    cursor.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, 0 WHERE NOT EXISTS "
                                   "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (name, name))
                    cursor.execute(f"UPDATE sqlite_sequence SET seq = max(seq, coalesce(({named}), 0)) "
                                   "WHERE name = ?", (name,))
                cursor.execute("COMMIT")
            except BaseException:
                if sqlite.in_transaction:  # SQLite may have rolled back itself (disk full, I/O)
                    cursor.execute("ROLLBACK")
                raise
        finally:
            sqlite.isolation_level = isolation  # as the pool hands it out
            connection.close()
