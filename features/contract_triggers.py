"""The triggers that keep `updated_at` current on UPDATE (the ingest watermark relies on
them), as SQL the contract migrations run. Their own module because SQLite drops a
table's triggers whenever a migration rebuilds the table, so later migrations re-create
them with the same statement."""

from __future__ import annotations

# Tables keyed by something other than `id`.
PRIMARY_KEYS = {"user_subjects": ("user_id", "subject_id"), "user_preferences": ("user_id",)}


def sqlite_touch_trigger(table: str) -> str:
    """SQLite: after an UPDATE that left updated_at alone, set it to now (explicit values
    stand, and the trigger's own UPDATE does not fire it again)."""
    keys = PRIMARY_KEYS.get(table, ("id",))
    match = " AND ".join(f"{k} = NEW.{k}" for k in keys)
    return (
        f"CREATE TRIGGER {table}_touch_updated_at AFTER UPDATE ON {table} "
        f"FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at BEGIN "
        f"UPDATE {table} SET updated_at = strftime('%Y-%m-%d %H:%M:%f000', 'now') "
        f"WHERE {match}; END"
    )
