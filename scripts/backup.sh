#!/usr/bin/env bash
# Back up DLA Workbench: a pg_dump of the database plus a copy of the volume store, into one folder.
#   scripts/backup.sh DEST_DIR        (uses DATABASE_URL and DLA_STORAGE_ROOT from the environment)
# Restore: scripts/restore.sh DEST_DIR, then `manage.py check_storage` verifies every file's sha256.
# Take the dump first, then the files: stored files are immutable and new ones only ever added, so every file
# the dump references is in the copy.
set -euo pipefail
dest=${1:?usage: backup.sh DEST_DIR}
: "${DATABASE_URL:?set DATABASE_URL (postgres://...)}"
storage=${DLA_STORAGE_ROOT:-var/storage}
mkdir -p "$dest"
pg_dump --format=custom --no-owner --dbname="$DATABASE_URL" --file="$dest/database.dump"
mkdir -p "$dest/storage" && cp -a "$storage/." "$dest/storage/" && rm -rf "$dest/storage/uploads"
echo "backup written to $dest ($(du -sh "$dest" | cut -f1))"
