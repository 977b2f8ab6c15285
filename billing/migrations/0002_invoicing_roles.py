"""Roles gain the invoicing permissions (rules in billing/roles.py)."""

from django.db import migrations

from billing.roles import sync_roles


def forwards(apps, schema_editor):
    sync_roles(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_roles"),
        ("customers", "0003_billingentity_invoice_grace_days"),
        ("invoicing", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
