#!/usr/bin/env bash
# pytest in two phases (make test runs this inside scripts/test-services.sh):
#   1. every test but the browser ones, in WORKERS processes (pytest-xdist; each test file
#      whole in one process, so a module's studio or fresh install starts once);
#   2. the browser tests alone: they drive Chromium against a live studio whose worker trains
#      meanwhile, and a machine also busy with the other tests slows the page past their waits.
# A phase that selects no test (ARGS named only tests of the other kind) counts as passed.
#
# Usage: scripts/pytest-phases.sh PYTHON WORKERS [PYTEST ARGS...]   (WORKERS 0: one process)
set -uo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: $0 PYTHON WORKERS [PYTEST ARGS...]" >&2
  exit 2
fi
python=$1
workers=$2
shift 2

"$python" -m pytest -n "$workers" --dist loadfile -m "not browser" "$@"
first=$?
"$python" -m pytest -m browser "$@"
second=$?
for rc in "$first" "$second"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then  # 5: no test selected in this phase
    exit "$rc"
  fi
done
if [ "$first" -eq 5 ] && [ "$second" -eq 5 ]; then
  exit 5
fi
exit 0
