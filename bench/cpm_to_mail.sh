#!/usr/bin/env bash
# CPM -> e-mail benchmark, one run, real peers on loopback:
#   SIPp UAC --MESSAGE (UDP)--> iwf serve (release) --SMTP--> smtp-sink (Postfix's)
# beside the same SIPp UAC against a stateless answerer in the same run (Kamailio answering
# 202 when installed, else a SIPp UAS answering 202), as the ceiling of the SIP side alone.
# * MESSAGE/s at 16 and 64 concurrent calls (closed loop: SIPp keeps that many open);
# * p50/p99 from MESSAGE to 202 at half iwf's measured 16-call rate (open loop, -r).
# Every process started here is stopped by PID on exit; everything listens on 127.0.0.1.
#   bench/cpm_to_mail.sh                    # N=20000 calls per row
#   N=5000 bench/cpm_to_mail.sh             # a quick look
# Needs: sipp, smtp-sink (postfix), python3; builds target/release/iwf if missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IWF=${IWF:-$ROOT/target/release/iwf}
N=${N:-20000}
for bin in sipp /usr/sbin/smtp-sink python3; do
  command -v "$bin" >/dev/null || { echo "skipped: $bin not installed"; exit 0; }
done
[ -x "$IWF" ] || (cd "$ROOT" && cargo build --release --quiet)

WORK=$(mktemp -d /tmp/iwf-cpm-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# the UAC scenario: one MESSAGE to a mail user, expecting 202, response time as rtd 1
cat >"$WORK/uac.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="CPM MESSAGE UAC">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      MESSAGE sip:alice%40mail.example.org@iwf.example.net SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15551234567@ims.example.net>;tag=[pid]SIPpTag00[call_number]
      To: <sip:alice%40mail.example.org@iwf.example.net>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      Content-Type: text/plain;charset=UTF-8
      Content-Length: [len]

      Hello from the benchmark, a short CPM pager message.
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="202" rtd="1"/>
</scenario>
XML
cat >"$WORK/uas.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="stateless 202">
  <recv request="MESSAGE"/>
  <send>
    <![CDATA[
      SIP/2.0 202 Accepted
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
</scenario>
XML

SINK_PORT=$(free_port)
/usr/sbin/smtp-sink -u nobody 127.0.0.1:$SINK_PORT 256 >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
SIP_PORT=$(free_port)
cat >"$WORK/iwf.yaml" <<EOF
smarthost: 127.0.0.1:$SINK_PORT
sip_listen: 127.0.0.1:$SIP_PORT
log_format: text
EOF
RUST_LOG=warn "$IWF" serve --rules "$ROOT/rules" --config "$WORK/iwf.yaml" \
  --smtp-listen 127.0.0.1:0 >"$WORK/iwf.log" 2>&1 &
PIDS+=($!)
BASE_PORT=$(free_port)
(cd "$WORK" && exec sipp -sf uas.xml -i 127.0.0.1 -p "$BASE_PORT" -t u1 -nostdin >/dev/null 2>&1) &
PIDS+=($!)
sleep 1
for _ in $(seq 50); do grep -q "listening on udp" "$WORK/iwf.log" && break; sleep 0.1; done

# run TARGET_PORT CALLS LIMIT [RATE] -> prints "calls seconds failed" and leaves rtt in $WORK/rtt.csv
run() {
  local port=$1 calls=$2 limit=$3 rate=${4:-100000} t0 t1 rc
  rm -f "$WORK"/uac_*_rtt.csv
  t0=$(date +%s.%N)
  rc=0
  (cd "$WORK" && timeout 600 sipp "127.0.0.1:$port" -sf uac.xml -i 127.0.0.1 -p "$(free_port)" -t u1 \
      -m "$calls" -l "$limit" -r "$rate" -nostdin -trace_rtt -rtt_freq 100 >/dev/null 2>&1) || rc=$?
  t1=$(date +%s.%N)
  python3 -c "print($calls, round($t1 - $t0, 3), $rc)"
}
pct() {  # p50 p99 of rtd1 from SIPp's rtt file (Date_ms;response_time_ms;rtd_no; whole ms)
  python3 - "$WORK" <<'PY'
import csv, glob, sys
vals = []
for f in glob.glob(sys.argv[1] + "/uac_*_rtt.csv"):
    for row in csv.reader(open(f), delimiter=";"):
        try:
            vals.append(float(row[1]))
        except (ValueError, IndexError):
            pass
vals.sort()
if not vals:
    print("- -")
else:
    q = lambda p: vals[min(len(vals) - 1, int(p * len(vals)))]
    print("%.2f %.2f" % (q(0.50), q(0.99)))
PY
}

echo "| target | concurrent | MESSAGE/s | SIPp exit |"
echo "|---|---|---|---|"
declare -A RATE
for target in iwf stateless; do
  port=$SIP_PORT; [ "$target" = stateless ] && port=$BASE_PORT
  for limit in 16 64; do
    read -r calls secs rc < <(run "$port" "$N" "$limit")
    r=$(python3 -c "print(round($calls / $secs))")
    RATE[$target-$limit]=$r
    echo "| $target | $limit | $r | $rc |"
  done
done
half=$(( ${RATE[iwf-16]} / 2 ))
echo
echo "| target | rate (calls/s) | p50 ms | p99 ms |"
echo "|---|---|---|---|"
for target in iwf stateless; do
  port=$SIP_PORT; [ "$target" = stateless ] && port=$BASE_PORT
  calls=$(( half * 10 )); [ "$calls" -gt "$N" ] && calls=$N
  run "$port" "$calls" 1000 "$half" >/dev/null
  read -r p50 p99 < <(pct)
  echo "| $target | $half | $p50 | $p99 |"
done
echo
echo "ratio iwf/stateless at 16: $(python3 -c "print(round(${RATE[iwf-16]} / max(1, ${RATE[stateless-16]}), 3))"), at 64: $(python3 -c "print(round(${RATE[iwf-64]} / max(1, ${RATE[stateless-64]}), 3))")"
echo "(response times have SIPp's 1 ms resolution)"
rm -rf "$WORK"
