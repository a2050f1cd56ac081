#!/usr/bin/env bash
# The test command: sets up what is missing, then runs the suite on both cores.
#   scripts/test.sh            the fast suite (CI runs this)
#   scripts/test.sh --slow     the long regressions and toolchain-heavy builds only
# Any other arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" test,hf,parity,fpga
marker="not slow"
if [ "${1:-}" = "--slow" ]; then marker="slow"; shift; fi
cd "$root"
# The parity tests against transformers skip where torch is absent; here it was just installed.
export LOCKSTEP_REQUIRE_PARITY=1
exec "$root/.venv/bin/python" -m pytest -n "${LOCKSTEP_JOBS:-2}" -m "$marker" "$@"
