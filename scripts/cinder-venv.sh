#!/bin/sh
# Create a virtualenv that holds OpenStack Cinder 29.0.0 and acmenfs (no deps),
# so the Cinder driver and its tests run with only what cinder-volume has.
#
# Usage: scripts/cinder-venv.sh VENV_DIR
# Owns: creating that venv. Must not touch the main dev venv or install
# acmenfs's appliance dependencies (fastapi, uvicorn, prometheus) into it.
set -eu

if [ "$#" -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
venv_dir=$1
repo_dir=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

"$python" -m venv "$venv_dir"
"$venv_dir/bin/pip" install --quiet --upgrade pip
"$venv_dir/bin/pip" install --quiet "cinder==29.0.0" fixtures testtools ddt pytest
"$venv_dir/bin/pip" install --quiet --no-deps -e "$repo_dir"
echo "cinder venv ready: $venv_dir"
"$venv_dir/bin/python" -c "import cinder, os_brick, acmenfs; print('cinder', cinder.__file__)"
