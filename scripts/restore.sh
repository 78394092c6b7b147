#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into an EMPTY database (DATABASE_URL) and storage root.
set -euo pipefail
src=${1:?usage: restore.sh BACKUP_DIR}
: "${DATABASE_URL:?set DATABASE_URL (postgres://...) of an empty database}"
storage=${DLA_STORAGE_ROOT:-var/storage}
pg_restore --no-owner --exit-on-error --dbname="$DATABASE_URL" "$src/database.dump"
mkdir -p "$storage"
cp -a "$src/storage/." "$storage/"
echo "restored; now run: manage.py check_storage"
