"""Roles gain the payments, credit notes, dunning and bank reconciliation permissions (billing/roles.py)."""

from django.db import migrations

from billing.roles import sync_roles


def forwards(apps, schema_editor):
    sync_roles(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_invoicing_roles"),
        ("invoicing", "0004_credit_notes_immutable"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
