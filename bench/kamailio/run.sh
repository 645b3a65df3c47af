#!/usr/bin/env bash
# Start/stop the loopback Kamailio SIP (+MSRP) answerer by PID.
#   KAM_DIR=/tmp/kam KAM_SIP_PORT=15080 KAM_MSRP_PORT=12855 bench/kamailio/run.sh start
#   KAM_DIR=/tmp/kam bench/kamailio/run.sh stop
# MESSAGE -> stateless 200. Requires: apt-get install kamailio.
# Ports default to 5080 (SIP udp+tcp) and 2855 (MSRP); the cfg used is a copy with the
# ports rewritten, written to $KAM_DIR/kamailio.cfg.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
KAM_DIR=${KAM_DIR:-/tmp/kam}
SIP_PORT=${KAM_SIP_PORT:-5080}
MSRP_PORT=${KAM_MSRP_PORT:-2855}
mkdir -p "$KAM_DIR"
CFG="$KAM_DIR/kamailio.cfg"
case "${1:-start}" in
start)
  for p in "$SIP_PORT" "$MSRP_PORT"; do
    if ss -Hltun | awk '{print $5}' | grep -qE "[:.]$p\$"; then
      echo "port $p is already in use on this machine; pick another (KAM_SIP_PORT/KAM_MSRP_PORT)"; exit 1
    fi
  done
  sed -e "s/5080/$SIP_PORT/g" -e "s/2855/$MSRP_PORT/g" "$HERE/kamailio-msrp.cfg" >"$CFG"
  kamailio -c -f "$CFG" >"$KAM_DIR/check.log" 2>&1 || { cat "$KAM_DIR/check.log"; exit 1; }
  # -DD: stay in foreground (no fork), -E: log to stderr, -Y: runtime dir (default /run/kamailio)
  kamailio -f "$CFG" -DD -E -Y "$KAM_DIR" -w "$KAM_DIR" \
           -P "$KAM_DIR/kamailio.pid" -m 64 -M 8 >"$KAM_DIR/kam.log" 2>&1 &
  echo $! >"$KAM_DIR/main.pid"
  for _ in $(seq 50); do
    ss -Hltn | awk '{print $4}' | grep -qE "127.0.0.1:$MSRP_PORT\$" && { echo "kamailio up, pid $(cat "$KAM_DIR/main.pid"), SIP udp/tcp 127.0.0.1:$SIP_PORT, log $KAM_DIR/kam.log"; exit 0; }
    sleep 0.1
  done
  echo "kamailio did not start"; cat "$KAM_DIR/kam.log"; exit 1 ;;
stop)
  [ -f "$KAM_DIR/main.pid" ] || { echo "not started (no $KAM_DIR/main.pid)"; exit 0; }
  pid=$(cat "$KAM_DIR/main.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { rm -f "$KAM_DIR/main.pid"; echo stopped; exit 0; }; sleep 0.1; done
  echo "still running: $pid"; exit 1 ;;
*) echo "usage: $0 start|stop"; exit 2 ;;
esac
