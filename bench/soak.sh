#!/usr/bin/env bash
# Soak (issue 14): `iwf serve` at half its probed maximum rate, a rule reload every minute,
# RSS and open fds sampled every 10 s and printed as a series (bench/soak.py). Not a CI test.
#
#   bench/soak.sh                      # 30 minutes
#   bench/soak.sh --minutes 10         # what the issue-14 note reports
#   bench/soak.sh --minutes 1 --probe 5   # smoke
#
# Needs python3 (standard library only). Loopback only; stops iwf by PID.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
if [[ -z "${IWF_BIN:-}" && "${BENCH_NO_BUILD:-}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --bin iwf)
fi
IWF_BIN=${IWF_BIN:-$ROOT/target/release/iwf}
ulimit -n 65536 2>/dev/null || true
exec "${PYTHON:-/usr/bin/python3}" "$HERE/soak.py" --iwf "$IWF_BIN" "$@"
