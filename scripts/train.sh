#!/usr/bin/env bash
# Install if needed, then train the default experiment (CartPole-v1, 4 clients) in
# Flower's simulation engine. Extra arguments go to fedrl-run, e.g.
#   scripts/train.sh --run-config 'aggregator="lweighted"'
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install.sh"
cd "$root"
exec "$root/.venv/bin/fedrl-run" --clients 4 --run-config experiments/presets/cartpole.toml "$@"
