#!/usr/bin/env bash
# Drift check: would a user who installs today, without constraints.txt, still pass?
# Installs the newest releases of buildlm[dev] into a fresh virtual environment and runs the
# quick tests there. torch stays at the version installed here (the README pins it, and its
# wheel is large): the new environment sees torch's own folders through symbolic links, never
# the packages installed beside it, so every other package is the newest release. Prints
# "drift: ..." lines with the versions that differ from constraints.txt and the failing tests;
# exits 0 when nothing drifted, 1 otherwise. CI runs it without failing on it.
#
#   scripts/drift-check.sh                 # the quick tests below
#   DRIFT_TESTS="tests/model" scripts/drift-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
# the tests that lean most on other packages' behaviour (tiktoken, tokenizers, transformers,
# the openai client, pytest itself): about a minute on two cores
TESTS="${DRIFT_TESTS:-tests/tokenizer/test_bpe.py tests/tokenizer/test_hf.py tests/tokenizer/test_reference.py \
tests/model/test_reference_models.py tests/viz/test_explain.py tests/hub/test_load.py tests/eval/test_choice.py \
tests/infer/test_generate.py tests/serve/test_openai_client.py tests/test_cli_parser.py tests/test_docs.py}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
py="$work/venv/bin/python"

share_torch() {  # link torch's top-level folders (and its dist-info) into $work/torch
  python3 - "$work/torch" <<'PY'
import os
import sys
from importlib import metadata
from pathlib import Path

dist = metadata.distribution("torch")
out = Path(sys.argv[1])
out.mkdir()
for top in sorted({Path(f).parts[0] for f in dist.files or []}):
    src = Path(dist.locate_file(top))
    if top != ".." and not top.endswith(".data") and src.exists():
        os.symlink(src, out / top)
PY
  site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$work/torch" >"$site/_shared_torch.pth"
}

if ! { python3 -m venv "$work/venv" && share_torch \
    && "$py" -m pip install --quiet -e ".[dev]"; } >"$work/install.log" 2>&1; then
  echo "drift: installing the newest releases of buildlm[dev] failed:"
  tail -20 "$work/install.log" | sed 's/^/drift:   /'
  exit 1
fi
"$py" scripts/freeze_constraints.py | grep -v '^#' | sort >"$work/newest.txt"
grep -v '^#' constraints.txt | sort | comm -13 - "$work/newest.txt" >"$work/changed.txt"
if [ -s "$work/changed.txt" ]; then
  echo "drift: $(wc -l <"$work/changed.txt") packages have newer releases than constraints.txt:"
  sed 's/^/drift:   /' "$work/changed.txt"
fi
# shellcheck disable=SC2086  # TESTS is a list of words
if ! HYPOTHESIS_PROFILE=ci "$py" -m pytest -q -p no:cacheprovider $TESTS >"$work/tests.log" 2>&1; then
  echo "drift: the quick tests FAIL with the newest releases (they pass with constraints.txt):"
  grep -E '^(FAILED|ERROR)|passed|failed' "$work/tests.log" | tail -30 | sed 's/^/drift:   /'
  exit 1
fi
echo "drift: none that breaks the quick tests ($(tail -1 "$work/tests.log"))"
