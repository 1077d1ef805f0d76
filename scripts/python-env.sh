#!/usr/bin/env bash
# Creates (once) the Python environment of floe's independent readers —
# confluent-kafka for the topic, pyiceberg and duckdb for the lake — and
# prints the path of its interpreter.
#
#   FLOE_PYTHON=$(scripts/python-env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FLOE_VENV_DIR:-$HOME/.cache/floe/venv}"
requirements=scripts/requirements.txt
stamp="$venv/.requirements"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating the Python environment $venv" >&2
    python3 -m venv "$venv" >&2
fi
if ! cmp -s "$requirements" "$stamp"; then
    echo "installing $(tr '\n' ' ' < "$requirements")" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$stamp"
fi
echo "$venv/bin/python"
