#!/usr/bin/env bash
# Install if needed, then run the test suite (tests/, every layer). Arguments go to pytest,
# e.g. `bash scripts/test.sh tests/unit` for the fast layer alone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
