"""Roles gain the revenue recognition and ledger permissions (billing/roles.py): revenue accountants keep
the chart, SSPs and revenue rules, run recognition and close periods; billing operators read the ledger."""

from django.db import migrations

from billing.roles import sync_roles


def forwards(apps, schema_editor):
    sync_roles(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_receivables_roles"),
        ("revrec", "0002_ledger_guards"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
