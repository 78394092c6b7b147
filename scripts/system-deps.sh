#!/usr/bin/env bash
# The Debian packages `make test` needs (PostgreSQL, Redis, Chromium and its driver, the DICOM validators, the
# PDF rasterizer, make, the Python venv module), checked by the command each one provides. Missing ones are
# installed with apt-get when this runs as root on a machine that has apt-get; otherwise it stops at once with
# one message naming the missing packages and the apt-get command that installs them.
# DLA_SYSTEM_DEPS=check forces that no-install branch (report only, never install).
set -euo pipefail

# "command package": the command (or, for an absolute path, the file) whose absence means the package is missing
REQUIRED=(
  "pg_ctlcluster postgresql"
  "redis-server redis-server"
  "chromium chromium"
  "chromedriver chromium-driver"
  "dciodvfy dicom3tools"
  "dcmdump dcmtk"
  "pdftoppm poppler-utils"
  "make make"
  "/usr/sbin/Orthanc orthanc"
  "/usr/share/orthanc/plugins/libOrthancDicomWeb.so orthanc-dicomweb"
)

missing_packages() {
  local entry cmd pkg
  for entry in "${REQUIRED[@]}"; do
    read -r cmd pkg <<<"$entry"
    if [[ $cmd == /* ]]; then [ -e "$cmd" ] || printf '%s\n' "$pkg"; continue; fi
    command -v "$cmd" >/dev/null 2>&1 || printf '%s\n' "$pkg"
  done
  python3 -c "import venv, ensurepip" >/dev/null 2>&1 || printf '%s\n' python3-venv
}

mapfile -t need < <(missing_packages)
[ ${#need[@]} -eq 0 ] && exit 0

install_cmd="apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${need[*]}"
if [ "${DLA_SYSTEM_DEPS:-}" = check ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make test: missing system packages: ${need[*]}; install them as root with: $install_cmd" >&2
  exit 1
fi

echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
mapfile -t still < <(missing_packages)
if [ ${#still[@]} -gt 0 ]; then
  echo "make test: apt-get finished but these packages still lack their commands: ${still[*]}" >&2
  exit 1
fi
