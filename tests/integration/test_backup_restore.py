"""Backup and restore: scripts/backup.sh (pg_dump + storage copy) restored by scripts/restore.sh into a new
database and storage folder passes `check_storage`; a corrupted or missing file makes the check fail naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import database_url_for_current_test_db

REPO = Path(__file__).resolve().parents[2]
BRUSH = {"op": "brush", "center_zyx": [10, 20, 20], "radius_mm": 6, "label": 1, "shape": "sphere"}

pytestmark = pytest.mark.django_db(transaction=True)


def run(cmd, env):
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_backup_restore_round_trip_and_corruption_is_detected(phantom_study, client_for, tmp_path):
    study = phantom_study(seed=31, shape=(24, 40, 40))
    client = client_for("annotator")
    draft = client.post("/api/drafts/", {"study": study.pk}, format="json").json()
    client.post(f"/api/drafts/{draft['id']}/ops/", {"op": BRUSH}, format="json")
    client.post(f"/api/drafts/{draft['id']}/commit/", {"message": "to back up"}, format="json")
    source_url = database_url_for_current_test_db()
    env = dict(os.environ, DATABASE_URL=source_url, DLA_STORAGE_ROOT=str(settings.STORAGE_ROOT))
    backup = run(["bash", "scripts/backup.sh", str(tmp_path / "backup")], env)
    assert backup.returncode == 0, backup.stderr
    restored_db = f"{settings.DATABASES['default']['NAME']}_restored"
    subprocess.run(["dropdb", "--if-exists", "-h", "/var/run/postgresql", restored_db], check=True)
    subprocess.run(["createdb", "-h", "/var/run/postgresql", restored_db], check=True)
    try:
        restored_url = source_url.replace(f"/{settings.DATABASES['default']['NAME']}?", f"/{restored_db}?")
        restored_storage = tmp_path / "restored-storage"
        env_restored = dict(
            env,
            DATABASE_URL=restored_url,
            DLA_STORAGE_ROOT=str(restored_storage),
            DJANGO_SETTINGS_MODULE="dla_web.test_settings",
        )
        restore = run(["bash", "scripts/restore.sh", str(tmp_path / "backup")], env_restored)
        assert restore.returncode == 0, restore.stderr
        check = run([sys.executable, "manage.py", "check_storage"], env_restored)
        assert check.returncode == 0, check.stderr
        assert "all 5 stored files present and intact" in check.stdout  # 4 volumes + 1 label version
        fill_file = restored_storage / study.volume("fill").file
        data = bytearray(fill_file.read_bytes())
        data[-1] ^= 0xFF
        fill_file.write_bytes(bytes(data))
        (restored_storage / study.label_versions.get().file).unlink()
        broken = run([sys.executable, "manage.py", "check_storage"], env_restored)
        assert broken.returncode != 0
        assert study.volume("fill").file in broken.stderr and "v1" in broken.stderr
        assert "2 of 5 stored files failed" in broken.stderr
    finally:
        subprocess.run(["dropdb", "--if-exists", "-h", "/var/run/postgresql", restored_db])
