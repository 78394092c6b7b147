#!/usr/bin/env bash
# Run DLA Workbench on embedded defaults: SQLite under var/, kombu's filesystem broker, two local Celery workers (one
# for queues default and gpu, one for background renders) and Django's server on http://127.0.0.1:8000, seeded with demo users and data.
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
# Interactive work (imports, recipes, reports) and training/inference on one worker; background MIP renders on
# their own, so a recipe never waits behind a queue of rotating-MIP cines.
.venv/bin/celery -A dla_web worker -Q default,gpu --concurrency 1 --loglevel WARNING -n local@%h &
worker=$!
.venv/bin/celery -A dla_web worker -Q render --concurrency 1 --loglevel WARNING -n render@%h &
render_worker=$!
trap 'kill $worker $render_worker 2>/dev/null; wait $worker $render_worker 2>/dev/null' EXIT INT TERM
echo "DLA Workbench: http://127.0.0.1:${PORT:-8000}/  (Ctrl-C stops web server and workers)"
$PY manage.py runserver "127.0.0.1:${PORT:-8000}" --noreload
