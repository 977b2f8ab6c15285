"""PostgreSQL refuses any change to what a finalized invoice says: its lines, amounts, number, parties and
dates. Only the status may move on (paid, void, uncollectible) and the stored PDF be attached. The services
never try; the trigger makes it true for any code path and for hand-written SQL too."""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION invoicing_refuse_finalized_invoice_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice % is % and cannot be deleted', COALESCE(OLD.number, OLD.id::text), OLD.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (
        (NEW.number, NEW.sequence_number, NEW.billing_entity_id, NEW.customer_id, NEW.kind, NEW.currency,
         NEW.issue_date, NEW.due_date, NEW.period_start, NEW.period_end, NEW.subtotal, NEW.discount_total,
         NEW.tax_total, NEW.total, NEW.prepaid_credit_applied, NEW.finalized_at)
        IS DISTINCT FROM
        (OLD.number, OLD.sequence_number, OLD.billing_entity_id, OLD.customer_id, OLD.kind, OLD.currency,
         OLD.issue_date, OLD.due_date, OLD.period_start, OLD.period_end, OLD.subtotal, OLD.discount_total,
         OLD.tax_total, OLD.total, OLD.prepaid_credit_applied, OLD.finalized_at)
        OR NEW.seller::text IS DISTINCT FROM OLD.seller::text
        OR NEW.buyer::text IS DISTINCT FROM OLD.buyer::text
        OR NEW.tax_breakdown::text IS DISTINCT FROM OLD.tax_breakdown::text
        OR NEW.discount_breakdown::text IS DISTINCT FROM OLD.discount_breakdown::text
        OR NEW.mentions::text IS DISTINCT FROM OLD.mentions::text
        OR NEW.status = 'draft'
    ) THEN
        RAISE EXCEPTION 'invoice % is % and immutable: correct it with a credit note or a new invoice',
            OLD.number, OLD.status USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION invoicing_refuse_finalized_line_change() RETURNS trigger AS $$
DECLARE
    invoice_status text;
BEGIN
    SELECT status INTO invoice_status FROM invoicing_invoice
        WHERE id = (CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END);
    IF invoice_status IS NOT NULL AND invoice_status <> 'draft' THEN
        RAISE EXCEPTION 'the lines of a % invoice are immutable', invoice_status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER invoicing_invoice_immutable BEFORE UPDATE OR DELETE ON invoicing_invoice
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_finalized_invoice_change();
CREATE TRIGGER invoicing_invoiceline_immutable BEFORE INSERT OR UPDATE OR DELETE ON invoicing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION invoicing_refuse_finalized_line_change();
"""

BACKWARD = r"""
DROP TRIGGER IF EXISTS invoicing_invoiceline_immutable ON invoicing_invoiceline;
DROP TRIGGER IF EXISTS invoicing_invoice_immutable ON invoicing_invoice;
DROP FUNCTION IF EXISTS invoicing_refuse_finalized_line_change();
DROP FUNCTION IF EXISTS invoicing_refuse_finalized_invoice_change();
"""


def _run(schema_editor, sql: str) -> None:
    # A plain cursor call without parameters: the PL/pgSQL messages use '%' placeholders of their own.
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)


def forwards(apps, schema_editor):
    _run(schema_editor, FORWARD)


def backwards(apps, schema_editor):
    _run(schema_editor, BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
