#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis servers the test suite talks to are running; start them from the installed
# Debian packages if they are stopped, and give the current OS user a PostgreSQL superuser role (peer auth over
# the Unix socket). Prints what it did; fails with a clear message if a server is not installed.
set -euo pipefail
me=$(id -un)
if ! command -v pg_ctlcluster >/dev/null; then
  echo "PostgreSQL is not installed: apt-get install -y postgresql (or set DATABASE_URL to a server)" >&2; exit 1
fi
if ! pg_isready -q -h /var/run/postgresql; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 30); do pg_isready -q -h /var/run/postgresql && break; sleep 0.5; done
fi
if ! psql -h /var/run/postgresql -d postgres -Atc "select 1" >/dev/null 2>&1; then
  echo "creating PostgreSQL role $me"
  runuser -u postgres -- psql -q -c "CREATE ROLE \"$me\" SUPERUSER LOGIN" >/dev/null
fi
if ! psql -h /var/run/postgresql -d postgres -Atc "select 1 from pg_database where datname = 'dla'" | grep -q 1; then
  createdb -h /var/run/postgresql dla  # the default DATABASE_URL of the tests and of manage.py checks
fi
if ! command -v redis-server >/dev/null; then
  echo "Redis is not installed: apt-get install -y redis-server (or set CELERY_BROKER_URL)" >&2; exit 1
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
echo "services ready: PostgreSQL (role $me) and Redis"
