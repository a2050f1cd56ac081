#!/usr/bin/env bash
# The main job: sets up what is missing, then runs `lockstep run` (arguments pass through).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" hf
exec "$root/.venv/bin/lockstep" run "$@"
