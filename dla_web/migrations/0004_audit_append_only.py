"""On PostgreSQL, a trigger makes audit events append-only: UPDATE and DELETE are refused, except the
user_id -> NULL update that deleting a user performs (the username stays in the row)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION dla_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.user_id IS NULL
       AND (NEW.at, NEW.action, NEW.username, NEW.ip, NEW.object_type, NEW.object_id, NEW.object_repr,
            NEW.detail::text)
           IS NOT DISTINCT FROM
           (OLD.at, OLD.action, OLD.username, OLD.ip, OLD.object_type, OLD.object_id, OLD.object_repr,
            OLD.detail::text) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER dla_audit_append_only BEFORE UPDATE OR DELETE ON dla_web_auditevent
    FOR EACH ROW EXECUTE FUNCTION dla_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS dla_audit_append_only ON dla_web_auditevent;
DROP FUNCTION IF EXISTS dla_audit_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("dla_web", "0003_audit_event")]
    operations = [migrations.RunPython(forwards, backwards)]
