"""PostgreSQL guards of the ledger: an entry whose debits and credits differ is refused at commit (a
deferred constraint trigger, so the lines can be inserted one by one inside the transaction); posted
entries and lines are never changed or deleted; nothing is posted into a closed period, and a closed
period stays closed."""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION revrec_check_entry_balanced() RETURNS trigger AS $$
DECLARE
    target_id bigint;
    debits numeric;
    credits numeric;
    stated numeric;
    line_count integer;
BEGIN
    IF TG_TABLE_NAME = 'revrec_journalentry' THEN
        target_id := NEW.id;
    ELSE
        target_id := NEW.entry_id;
    END IF;
    SELECT COALESCE(SUM(debit), 0), COALESCE(SUM(credit), 0), COUNT(*)
      INTO debits, credits, line_count FROM revrec_journalline WHERE revrec_journalline.entry_id = target_id;
    SELECT total INTO stated FROM revrec_journalentry WHERE id = target_id;
    IF line_count < 2 THEN
        RAISE EXCEPTION 'journal entry % has % line(s): an entry needs a debit and a credit', target_id, line_count
            USING ERRCODE = 'check_violation';
    END IF;
    IF debits <> credits THEN
        RAISE EXCEPTION 'journal entry % is unbalanced: debits % <> credits %', target_id, debits, credits
            USING ERRCODE = 'check_violation';
    END IF;
    IF stated IS DISTINCT FROM debits THEN
        RAISE EXCEPTION 'journal entry % states a total of % but its debits are %', target_id, stated, debits
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER revrec_journalline_balanced AFTER INSERT ON revrec_journalline
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION revrec_check_entry_balanced();
CREATE CONSTRAINT TRIGGER revrec_journalentry_balanced AFTER INSERT ON revrec_journalentry
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION revrec_check_entry_balanced();

CREATE OR REPLACE FUNCTION revrec_refuse_ledger_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% rows are posted and never changed or deleted: post a correcting entry', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER revrec_journalentry_immutable BEFORE UPDATE OR DELETE ON revrec_journalentry
    FOR EACH ROW EXECUTE FUNCTION revrec_refuse_ledger_change();
CREATE TRIGGER revrec_journalline_immutable BEFORE UPDATE OR DELETE ON revrec_journalline
    FOR EACH ROW EXECUTE FUNCTION revrec_refuse_ledger_change();
CREATE TRIGGER revrec_recognition_immutable BEFORE UPDATE OR DELETE ON revrec_recognition
    FOR EACH ROW EXECUTE FUNCTION revrec_refuse_ledger_change();

CREATE OR REPLACE FUNCTION revrec_refuse_closed_period_entry() RETURNS trigger AS $$
DECLARE
    period record;
BEGIN
    SELECT status, start_date, end_date, billing_entity_id INTO period
      FROM revrec_accountingperiod WHERE id = NEW.period_id FOR SHARE;
    IF period.status <> 'open' THEN
        RAISE EXCEPTION 'accounting period starting % is closed: post into an open period', period.start_date
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.entry_date < period.start_date OR NEW.entry_date >= period.end_date
       OR NEW.billing_entity_id <> period.billing_entity_id THEN
        RAISE EXCEPTION 'journal entry dated % is outside its period (% to %) or entity',
            NEW.entry_date, period.start_date, period.end_date USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER revrec_journalentry_open_period BEFORE INSERT ON revrec_journalentry
    FOR EACH ROW EXECUTE FUNCTION revrec_refuse_closed_period_entry();

CREATE OR REPLACE FUNCTION revrec_refuse_reopening() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'accounting periods are never deleted' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.status = 'closed' THEN
        RAISE EXCEPTION 'accounting period starting % is closed and never changes', OLD.start_date
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.start_date <> OLD.start_date OR NEW.end_date <> OLD.end_date
       OR NEW.billing_entity_id <> OLD.billing_entity_id THEN
        RAISE EXCEPTION 'an accounting period keeps its dates' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER revrec_accountingperiod_closed_stays BEFORE UPDATE OR DELETE ON revrec_accountingperiod
    FOR EACH ROW EXECUTE FUNCTION revrec_refuse_reopening();
"""

BACKWARD = r"""
DROP TRIGGER IF EXISTS revrec_accountingperiod_closed_stays ON revrec_accountingperiod;
DROP TRIGGER IF EXISTS revrec_journalentry_open_period ON revrec_journalentry;
DROP TRIGGER IF EXISTS revrec_recognition_immutable ON revrec_recognition;
DROP TRIGGER IF EXISTS revrec_journalline_immutable ON revrec_journalline;
DROP TRIGGER IF EXISTS revrec_journalentry_immutable ON revrec_journalentry;
DROP TRIGGER IF EXISTS revrec_journalentry_balanced ON revrec_journalentry;
DROP TRIGGER IF EXISTS revrec_journalline_balanced ON revrec_journalline;
DROP FUNCTION IF EXISTS revrec_refuse_reopening();
DROP FUNCTION IF EXISTS revrec_refuse_closed_period_entry();
DROP FUNCTION IF EXISTS revrec_refuse_ledger_change();
DROP FUNCTION IF EXISTS revrec_check_entry_balanced();
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
    dependencies = [("revrec", "0001_ledger_and_revenue")]

    operations = [migrations.RunPython(forwards, backwards)]
