#!/usr/bin/env bash
# Install if needed, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest tests "$@"
