#!/usr/bin/env bash
# Run DLA Workbench on embedded defaults: SQLite under var/, kombu's filesystem broker, one local Celery worker
# (queues default and gpu) and Django's server on http://127.0.0.1:8000, seeded with demo users and data.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBUG="${DEBUG:-1}"
PY=.venv/bin/python
mkdir -p var
$PY manage.py migrate --noinput -v0
[ -s var/demo-password ] || $PY -c "import secrets; print(secrets.token_urlsafe(9))" > var/demo-password
$PY manage.py createdemo --password "$(cat var/demo-password)"
.venv/bin/celery -A dla_web worker -Q default,gpu --concurrency 1 --loglevel WARNING -n local@%h &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM
echo "DLA Workbench: http://127.0.0.1:${PORT:-8000}/  (Ctrl-C stops web server and worker)"
$PY manage.py runserver "127.0.0.1:${PORT:-8000}" --noreload
