#!/usr/bin/env bash
# Start/stop the loopback Kamailio SIP+MSRP peer by PID (no system service involved).
#   tests/peers/kamailio/run.sh start   # SIP 127.0.0.1:$KAM_SIP_PORT udp+tcp, MSRP tcp $KAM_MSRP_PORT
#   tests/peers/kamailio/run.sh stop
# Environment: KAM_DIR (default /tmp/iwf-kam: config, pid, log), KAM_SIP_PORT (5080),
# KAM_MSRP_PORT (2855), KAM_PATH_PORT (the port in the SDP a=path; default KAM_MSRP_PORT).
# Requires: apt-get install kamailio (msrp.so ships in the main package).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
KAM_DIR=${KAM_DIR:-/tmp/iwf-kam}
SIP_PORT=${KAM_SIP_PORT:-5080}
MSRP_PORT=${KAM_MSRP_PORT:-2855}
PATH_PORT=${KAM_PATH_PORT:-$MSRP_PORT}
mkdir -p "$KAM_DIR"
case "${1:-start}" in
start)
  command -v kamailio >/dev/null || { echo "skipped: kamailio not installed"; exit 2; }
  sed -e "s/@SIP_PORT@/$SIP_PORT/g" -e "s/@MSRP_PORT@/$MSRP_PORT/g" -e "s/@PATH_PORT@/$PATH_PORT/g" \
    "$HERE/kamailio-msrp.cfg" >"$KAM_DIR/kamailio.cfg"
  kamailio -c -f "$KAM_DIR/kamailio.cfg" >"$KAM_DIR/check.log" 2>&1 || { cat "$KAM_DIR/check.log"; exit 1; }
  # -DD: stay in the foreground (no daemon), -E: log to stderr, -Y: runtime dir
  kamailio -f "$KAM_DIR/kamailio.cfg" -DD -E -Y "$KAM_DIR" -w "$KAM_DIR" \
           -P "$KAM_DIR/kamailio.pid" -m 64 -M 8 >"$KAM_DIR/kam.log" 2>&1 &
  echo $! >"$KAM_DIR/main.pid"
  for _ in $(seq 50); do
    ss -ltn | grep -q "127.0.0.1:$MSRP_PORT " && { echo "kamailio up, pid $(cat "$KAM_DIR/main.pid"), log $KAM_DIR/kam.log"; exit 0; }
    sleep 0.1
  done
  echo "kamailio did not start"; cat "$KAM_DIR/kam.log"; exit 1 ;;
stop)
  [ -f "$KAM_DIR/main.pid" ] || exit 0
  pid=$(cat "$KAM_DIR/main.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { rm -f "$KAM_DIR/main.pid"; echo stopped; exit 0; }; sleep 0.1; done
  echo "still running: $pid"; exit 1 ;;
esac
