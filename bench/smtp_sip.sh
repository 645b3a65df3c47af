#!/usr/bin/env bash
# Whole-system benchmark: smtp-source -> iwf -> Kamailio, beside smtp-sink and the naive
# Python gateway (bench/py_iwf.py), all on 127.0.0.1. See bench/README.md.
#
#   bench/smtp_sip.sh                 # full run (~20 min): 3 rounds, 10 s per run
#   bench/smtp_sip.sh --rounds 1 --duration 3 --skip idle   # quick look
#   bench/smtp_sip.sh --help          # every option (bench/smtp_sip.py)
#
# It builds iwf (release), starts Kamailio, smtp-sink, two iwf and two py_iwf processes,
# runs the load, stops all of them by PID, and writes bench/results/<date>.md and .json.
# Needs (Debian, as root): postfix (smtp-source, smtp-sink), kamailio, python3-aiosmtpd,
# redis-server (the iwf-redis target; iwf-sqlite and iwf-udp compare the stores):
#   apt-get update
#   echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
#       postfix kamailio python3-aiosmtpd redis-server
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

missing=()
for t in /usr/sbin/smtp-source /usr/sbin/smtp-sink kamailio ss /usr/bin/python3 redis-server; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=("python3-aiosmtpd")
if ((${#missing[@]})); then
  echo "missing: ${missing[*]} (see the install lines at the top of $0)" >&2
  exit 1
fi

if [[ -z "${IWF_BIN:-}" && "${BENCH_NO_BUILD:-}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --bin iwf)
fi
IWF_BIN=${IWF_BIN:-$ROOT/target/release/iwf}

# Connection-per-mail runs leave tens of thousands of sockets in TIME_WAIT; 2 (the
# kernel default) lets loopback connections reuse them. Only read here, never changed.
tw=$(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null || echo '?')
[[ "$tw" == 0 ]] && echo "warning: net.ipv4.tcp_tw_reuse=0; per-mail runs may run out of ports (sysctl net.ipv4.tcp_tw_reuse=2)" >&2

# iwf, smtp-sink and py_iwf each hold 1,000+ sockets in the idle-connection phase.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec /usr/bin/python3 "$HERE/smtp_sip.py" --iwf "$IWF_BIN" "$@"
