#!/usr/bin/env bash
# Idempotent set-up for Lockstep: the project virtualenv (.venv), the pinned packages, and Icarus
# Verilog. Quick when everything is already there. Usage: scripts/setup.sh [EXTRAS], e.g. "test,hf".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
venv="$root/.venv"
python="${LOCKSTEP_PYTHON:-python3}"

say() { printf 'lockstep setup: %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  say "installing $* with apt-get"
  if [ ! -f /tmp/.lockstep-apt-updated ]; then apt-get update -qq >/dev/null && touch /tmp/.lockstep-apt-updated; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v "$python" >/dev/null 2>&1; then
  if is_root; then apt_install python3 python3-venv; else
    say "Python 3.11 or newer is missing: run 'sudo apt-get install -y python3 python3-venv' and try again"; exit 1; fi
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  say "Python 3.11 or newer is needed, $("$python" --version 2>&1) was found (set LOCKSTEP_PYTHON to another interpreter)"; exit 1
fi
if ! command -v iverilog >/dev/null 2>&1; then
  if is_root && command -v apt-get >/dev/null 2>&1; then apt_install iverilog; else
    say "Icarus Verilog is missing: run 'sudo apt-get install -y iverilog' and try again"; exit 1; fi
fi
if [ ! -f /usr/include/lz4.h ] && command -v apt-get >/dev/null 2>&1 && is_root; then
  # Verilator's FST waveform writer compiles against LZ4; without it waveforms are VCD (larger).
  apt_install liblz4-dev || say "liblz4-dev could not be installed: Verilator waveforms will be VCD, not FST"
fi
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if is_root && command -v apt-get >/dev/null 2>&1; then apt_install python3-venv; "$python" -m venv "$venv"; else
      say "the venv module is missing: run 'sudo apt-get install -y python3-venv' and try again"; exit 1; fi
  fi
fi
stamp="$venv/.lockstep-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1) [$extras]"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  say "installing the pinned packages${extras:+ with extras $extras} (first time: a few minutes)"
  spec="$root"; [ -n "$extras" ] && spec="$root[$extras]"
  # This machine's pip configuration names local mirrors that may be absent: drop that noise.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" >> "$stamp"
fi
