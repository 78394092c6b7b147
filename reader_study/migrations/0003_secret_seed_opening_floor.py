"""Blinding (issue 16): every reader study gets a secret randomization seed (256 bits from ``secrets``); draft
studies get theirs now, while studies already opened keep an empty one and their integer ``seed``, so their
queues (stored as assignments) stay exactly as they are and stay reproducible. Opening passes through the new
"opening" status (frames rendered before anybody reads), and each case stores the window floor both of its
images are shown with."""

import secrets

from django.db import migrations, models

import reader_study.models


def secret_seeds_for_drafts(apps, schema_editor):
    ReaderStudy = apps.get_model("reader_study", "ReaderStudy")
    for rs in ReaderStudy.objects.filter(status="draft", randomization_seed=""):
        rs.randomization_seed = secrets.token_hex(32)
        rs.save(update_fields=["randomization_seed"])


class Migration(migrations.Migration):
    dependencies = [
        ("reader_study", "0002_delete_cine"),
    ]

    operations = [
        migrations.AddField(
            model_name="readerstudy",
            name="randomization_seed",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(secret_seeds_for_drafts, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="readerstudy",
            name="randomization_seed",
            field=models.CharField(
                default=reader_study.models.new_randomization_seed,
                editable=False,
                help_text="secret seed of case order and A/B (secrets.token_hex); shown to admins after the study "
                "closes; empty for studies opened with the legacy integer seed",
                max_length=64,
            ),
        ),
        migrations.AlterField(
            model_name="readerstudy",
            name="seed",
            field=models.BigIntegerField(
                default=0,
                editable=False,
                help_text="legacy integer seed, used only by studies opened before randomization_seed existed",
            ),
        ),
        migrations.AlterField(
            model_name="readerstudy",
            name="status",
            field=models.CharField(
                choices=[
                    ("draft", "Draft"),
                    ("opening", "opening (rendering frames)"),
                    ("open", "Open"),
                    ("closed", "Closed"),
                ],
                db_index=True,
                default="draft",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="case",
            name="display_floor_hu",
            field=models.FloatField(
                blank=True,
                editable=False,
                help_text="window floor of both images (HU above the DSA background noise), set when the study opens",
                null=True,
            ),
        ),
    ]
