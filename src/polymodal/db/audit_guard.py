"""The database refuses to change or delete audit events: triggers on ``audit_events``.

The hash chain *detects* tampering (tenancy/audit.py); these triggers *prevent* it by the
application and by anyone using its database role. A DELETE is let through only when the
event's tenant no longer exists, which is what happens when a tenant is erased (the
foreign key cascades). Someone who can drop triggers can still tamper; the verifier is
for them.

Used by migration 0007 (and by tests that play an attacker with owner rights). SQLite
loses triggers when a migration rebuilds the table (``batch_alter_table``); such a
migration must call ``install`` again (tests/ledger checks the guard at head).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION polymodal_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id) THEN
    RETURN OLD;  -- the tenant is being erased: its log goes with it
  END IF;
  RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""
_PG_TRIGGER = (
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION polymodal_audit_append_only()"
)
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
    "WHEN EXISTS (SELECT 1 FROM tenants WHERE id = OLD.tenant_id) "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
)


def install_statements(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [_PG_FUNCTION, _PG_TRIGGER]
    return list(_SQLITE_TRIGGERS)


def remove_statements(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
            "DROP FUNCTION IF EXISTS polymodal_audit_append_only()",
        ]
    return [
        "DROP TRIGGER IF EXISTS audit_events_no_update",
        "DROP TRIGGER IF EXISTS audit_events_no_delete",
    ]


def install(connection: Connection) -> None:
    for statement in install_statements(connection.dialect.name):
        connection.execute(text(statement))


def remove(connection: Connection) -> None:
    for statement in remove_statements(connection.dialect.name):
        connection.execute(text(statement))
