"""The finance roles as groups (rules in billing/roles.py). Later migrations re-run `sync_roles` when the
rules or the permissions change."""

from django.db import migrations

from billing.roles import sync_roles


def forwards(apps, schema_editor):
    sync_roles(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("django_celery_beat", "0018_improve_crontab_helptext"),
        ("api", "0001_initial"),
        ("customers", "0002_lifecycle_permissions"),
        ("contracts", "0003_close_null_gaps_in_checks"),
        ("usage", "0003_usage_backfill"),
    ]

    operations = [
        # Groups are left in place on reverse: they may have members.
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
