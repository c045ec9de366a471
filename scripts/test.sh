#!/usr/bin/env bash
# Installs everything the acmenfs tests need, then runs them all.
#   - Debian packages (as root): real NFS clients, rpcbind/rpcinfo, tshark, btrfs/XFS tools,
#     chromium (the console's browser tests drive it through Playwright; no browser download)
#   - .venv        : acmenfs + its test extras (pytest, hypothesis, libnfs bindings, ...)
#   - .venv-cinder : cinder==29.0.0 + acmenfs without its server dependencies (the driver's world)
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

APT_PACKAGES="libnfs-utils libnfs-dev rpcbind tshark btrfs-progs xfsprogs gcc python3-dev qemu-utils chromium"
missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: $missing -- run as root (or: sudo apt-get install $missing)" >&2
    exit 1
  fi
  echo "== installing Debian packages: $missing"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi

echo "== .venv (acmenfs + test extras)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]"

if [ -f scripts/cinder-venv.sh ] && [ -d tests/cinder ]; then
  echo "== .venv-cinder (cinder 29.0.0 + acmenfs --no-deps)"
  bash scripts/cinder-venv.sh "$ROOT/.venv-cinder"
fi

results=$(mktemp -d)
status=0
echo "== tests (appliance, NFS, RPC)"
.venv/bin/python -m pytest tests --ignore=tests/cinder --junitxml="$results/main.xml" "$@" || status=$?
if [ -d tests/cinder ] && [ -x .venv-cinder/bin/python ]; then
  echo "== tests (Cinder driver, in the Cinder virtualenv)"
  ACMENFS_BIN="$ROOT/.venv/bin/acmenfs" .venv-cinder/bin/python -m pytest tests/cinder \
    --junitxml="$results/cinder.xml" "$@" || status=$?
fi
.venv/bin/python - "$results" <<'PYEOF'
import pathlib, sys, xml.etree.ElementTree as ET
totals = dict(tests=0, failures=0, errors=0, skipped=0)
for path in pathlib.Path(sys.argv[1]).glob("*.xml"):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"acmenfs: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PYEOF
exit $status
