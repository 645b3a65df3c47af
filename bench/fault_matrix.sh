#!/usr/bin/env bash
# Fault matrix under load (issue 14): a private Postfix (tests/peers/postfix-relay.sh)
# relays N mails per row to `iwf serve`, whose SIP next hop (a TCP peer inside
# bench/fault_matrix.py) misbehaves one way per row: answers 200 (baseline), stays silent,
# 500, 404, 603, 480, resets the connection, answers after 5 s, answers garbage, 413, an MSRP peer
# that dies (RST) mid-message on the first attempt of every mail; and a row where
# iwf is killed (SIGKILL) and restarted mid-run. Prints one table: per row
# sent = delivered + bounced (DSN in the sender's mailbox) + still queued, duplicates, lost.
#
#   bench/fault_matrix.sh                      # 1,000 mails per row
#   bench/fault_matrix.sh -n 50 --settle 40    # quick look (~6 min)
#   bench/fault_matrix.sh -n 20 --rows ok,5xx,rst
#
# Needs (Debian, as root): postfix, python3 with aiosmtpd (python3-aiosmtpd). Loopback only;
# stops everything it starts (iwf by PID, Postfix through its own instance directory).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PY=${PYTHON:-/usr/bin/python3}
missing=()
for t in /usr/sbin/postfix /usr/sbin/postqueue /usr/sbin/postsuper; do
  [[ -x $t ]] || missing+=("$t")
done
"$PY" -c 'import aiosmtpd' 2>/dev/null || missing+=("python3-aiosmtpd")
if ((${#missing[@]})); then
  echo "missing: ${missing[*]}" >&2
  exit 1
fi
if [[ -z "${IWF_BIN:-}" && "${BENCH_NO_BUILD:-}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --bin iwf)
fi
IWF_BIN=${IWF_BIN:-$ROOT/target/release/iwf}
exec "$PY" "$HERE/fault_matrix.py" --iwf "$IWF_BIN" "$@"
