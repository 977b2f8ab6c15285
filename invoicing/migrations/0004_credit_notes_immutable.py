"""PostgreSQL refuses any change to an issued credit note or its lines, and any delete of the money rows
(payments, allocations, refunds, credit balance ledger): corrections are new rows (a reversal, a refund),
never edits. Only a credit note's stored PDF may be attached after it is issued."""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION invoicing_refuse_credit_note_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'credit note % is issued and cannot be deleted', OLD.number
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (to_jsonb(NEW) - 'pdf' - 'pdf_sha256' - 'updated_at') IS DISTINCT FROM
       (to_jsonb(OLD) - 'pdf' - 'pdf_sha256' - 'updated_at') THEN
        RAISE EXCEPTION 'credit note % is issued and immutable', OLD.number
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION invoicing_refuse_money_row_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION '% rows are never deleted: record a reversing entry', TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RAISE EXCEPTION '% rows are never changed: record a reversing entry', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER invoicing_creditnote_immutable BEFORE UPDATE OR DELETE ON invoicing_creditnote
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_credit_note_change();
CREATE TRIGGER invoicing_creditnoteline_immutable BEFORE UPDATE OR DELETE ON invoicing_creditnoteline
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_money_row_change();
CREATE TRIGGER invoicing_allocation_append_only BEFORE UPDATE OR DELETE ON invoicing_allocation
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_money_row_change();
CREATE TRIGGER invoicing_customerbalancetransaction_append_only
    BEFORE UPDATE OR DELETE ON invoicing_customerbalancetransaction
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_money_row_change();
"""

BACKWARD = r"""
DROP TRIGGER IF EXISTS invoicing_customerbalancetransaction_append_only ON invoicing_customerbalancetransaction;
DROP TRIGGER IF EXISTS invoicing_allocation_append_only ON invoicing_allocation;
DROP TRIGGER IF EXISTS invoicing_creditnoteline_immutable ON invoicing_creditnoteline;
DROP TRIGGER IF EXISTS invoicing_creditnote_immutable ON invoicing_creditnote;
DROP FUNCTION IF EXISTS invoicing_refuse_money_row_change();
DROP FUNCTION IF EXISTS invoicing_refuse_credit_note_change();
"""


def _run(schema_editor, sql: str) -> None:
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)


def forwards(apps, schema_editor):
    _run(schema_editor, FORWARD)


def backwards(apps, schema_editor):
    _run(schema_editor, BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0003_payments_credit_notes_dunning_bank")]

    operations = [migrations.RunPython(forwards, backwards)]
