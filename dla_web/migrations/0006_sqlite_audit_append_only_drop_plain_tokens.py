"""The audit log append-only on SQLite too (the ``make run`` default), as 0004 made it on PostgreSQL: UPDATE and
DELETE are refused, except the user_id -> NULL update that deleting a user performs. And the plain-text API keys
of rest_framework.authtoken are dropped: keys are now stored hashed (dla_web.ApiToken); old keys stop working."""

from django.db import migrations

SQLITE_CREATE = [
    """
    CREATE TRIGGER IF NOT EXISTS dla_audit_no_update BEFORE UPDATE ON dla_web_auditevent
    WHEN NOT (NEW.user_id IS NULL AND NEW.at IS OLD.at AND NEW.action IS OLD.action
              AND NEW.username IS OLD.username AND NEW.ip IS OLD.ip AND NEW.object_type IS OLD.object_type
              AND NEW.object_id IS OLD.object_id AND NEW.object_repr IS OLD.object_repr
              AND NEW.detail IS OLD.detail)
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS dla_audit_no_delete BEFORE DELETE ON dla_web_auditevent
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)'); END
    """,
]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS dla_audit_no_update", "DROP TRIGGER IF EXISTS dla_audit_no_delete"]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_CREATE:
            schema_editor.execute(statement, params=None)
    schema_editor.execute("DROP TABLE IF EXISTS authtoken_token", params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_DROP:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("dla_web", "0005_api_tokens")]
    operations = [migrations.RunPython(forwards, backwards)]
