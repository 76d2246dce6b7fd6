#!/usr/bin/env bash
# Refresh constraints.txt on purpose: install the newest releases of buildlm[dev] into a fresh
# virtual environment, run the test suite there, and only if it passes write their versions
# to constraints.txt (review the diff, commit it with the test run's result).
#
#   scripts/refresh-constraints.sh                 # torch 2.13.0, the whole suite
#   TORCH=2.13.0 PYTEST_ARGS="tests/model" scripts/refresh-constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="${TORCH:-2.13.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "torch==$TORCH" --index-url https://download.pytorch.org/whl/cpu
"$py" -m pip install --quiet -e ".[dev]"          # no -c: the newest releases
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
"$py" -m pytest -q ${PYTEST_ARGS:-}
"$py" scripts/freeze_constraints.py > "$work/constraints.txt"
mv "$work/constraints.txt" constraints.txt
git --no-pager diff --stat -- constraints.txt || true
echo "constraints.txt refreshed; review the diff and commit it"
