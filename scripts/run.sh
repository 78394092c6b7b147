#!/usr/bin/env bash
# Run DLA Workbench on embedded defaults: SQLite under var/, kombu's filesystem broker, one local Celery worker
# (queues default and gpu) and Django's server on http://127.0.0.1:8000, seeded with demo users and data.
# DEBUG is off (friendly error pages, never Django's technical ones) with a secret key generated once into
# var/secret-key; DEBUG=1 make run gives the development pages. Secrets never appear on a command line.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG="${DEBUG:-0}"
PY=.venv/bin/python
mkdir -p var
umask 077
[ -s var/secret-key ] || $PY -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret-key
[ -s var/demo-password ] || $PY -c "import secrets; print(secrets.token_urlsafe(9))" > var/demo-password
umask 022
SECRET_KEY="$(cat var/secret-key)"
export SECRET_KEY
$PY manage.py migrate --noinput -v0
$PY manage.py collectstatic --noinput -v0
$PY manage.py createdemo --password-file var/demo-password
.venv/bin/celery -A dla_web worker -Q default,gpu --concurrency 1 --loglevel WARNING -n local@%h &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM
echo "DLA Workbench: http://127.0.0.1:${PORT:-8000}/  (Ctrl-C stops web server and worker)"
$PY manage.py runserver "127.0.0.1:${PORT:-8000}" --noreload
