#!/usr/bin/env bash
# CPM -> e-mail benchmark, one run, real peers on loopback:
#   SIPp UAC --MESSAGE (UDP)--> iwf serve (release) --SMTP--> smtp-sink (Postfix's)
# beside the same SIPp UAC against two stateless answerers in the same run, as the ceiling of
# the SIP side alone: Kamailio answering 202 with sl_send_reply (bench/kamailio/kamailio-202.cfg;
# the row is left out when kamailio is not installed) and a SIPp UAS answering 202.
# * MESSAGE/s at 16 and 64 concurrent calls (closed loop: SIPp keeps that many open);
# * p50/p99 from MESSAGE to 202 at half iwf's highest measured rate (open loop, -r), for
#   each target at that same rate; the ratios iwf/Kamailio and iwf/SIPp UAS.
# Every process started here is stopped by PID on exit; everything listens on 127.0.0.1.
#   bench/cpm_to_mail.sh                    # N=20000 calls per row
#   N=5000 bench/cpm_to_mail.sh             # a quick look
# Needs: sipp, smtp-sink (postfix), python3 (kamailio for its row).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# IWF=path uses that binary as it is; by default target/release/iwf, built (or brought up to
# date: a stale binary may not know the rule set's fields) first.
[ -n "${IWF:-}" ] || (cd "$ROOT" && cargo build --release --locked --quiet)
IWF=${IWF:-$ROOT/target/release/iwf}
N=${N:-20000}
for bin in sipp /usr/sbin/smtp-sink python3; do
  command -v "$bin" >/dev/null || { echo "skipped: $bin not installed"; exit 0; }
done

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
TARGETS="iwf sipp-uas"
if command -v kamailio >/dev/null; then
  KAM_PORT=$(free_port)
  sed -e "s/@SIP_PORT@/$KAM_PORT/g" "$ROOT/bench/kamailio/kamailio-202.cfg" >"$WORK/kam.cfg"
  # -DD: foreground (its workers end with it on SIGTERM), -E: log to stderr
  kamailio -f "$WORK/kam.cfg" -DD -E -Y "$WORK" -w "$WORK" -m 64 -M 8 >"$WORK/kam.log" 2>&1 &
  PIDS+=($!)
  TARGETS="iwf kamailio sipp-uas"
  kamailio -c -f "$WORK/kam.cfg" >/dev/null 2>&1 || { echo "kamailio-202.cfg does not load:"; cat "$WORK/kam.log"; exit 1; }
fi
sleep 1
for _ in $(seq 50); do grep -q "listening on udp" "$WORK/iwf.log" && break; sleep 0.1; done
grep -q "listening on udp" "$WORK/iwf.log" || { echo "iwf did not start:"; cat "$WORK/iwf.log"; exit 1; }
port_of() { case $1 in iwf) echo "$SIP_PORT" ;; kamailio) echo "$KAM_PORT" ;; *) echo "$BASE_PORT" ;; esac; }

# run TARGET_PORT CALLS LIMIT [RATE] -> prints "calls seconds failed" and leaves rtt in $WORK/rtt.csv
run() {
  local port=$1 calls=$2 limit=$3 rate=${4:-100000} t0 t1 rc
  rm -f "$WORK"/uac_*_rtt.csv
  t0=$(date +%s.%N)
  rc=0
  (cd "$WORK" && timeout 120 sipp "127.0.0.1:$port" -sf uac.xml -i 127.0.0.1 -p "$(free_port)" -t u1 \
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
for target in $TARGETS; do
  port=$(port_of "$target")
  for limit in 16 64; do
    read -r calls secs rc < <(run "$port" "$N" "$limit")
    r=$(python3 -c "print(round($calls / $secs))")
    RATE[$target-$limit]=$r
    echo "| $target | $limit | $r | $rc |"
  done
done
max=${RATE[iwf-16]}; [ "${RATE[iwf-64]}" -gt "$max" ] && max=${RATE[iwf-64]}
half=$(( max / 2 ))
echo
echo "| target | rate (calls/s, half iwf's highest) | p50 ms | p99 ms |"
echo "|---|---|---|---|"
for target in $TARGETS; do
  port=$(port_of "$target")
  calls=$(( half * 10 )); [ "$calls" -gt "$N" ] && calls=$N
  run "$port" "$calls" 1000 "$half" >/dev/null
  read -r p50 p99 < <(pct)
  echo "| $target | $half | $p50 | $p99 |"
done
echo
ratio() { python3 -c "print(round(${RATE[iwf-$2]} / max(1, ${RATE[$1-$2]}), 3))"; }
for base in $TARGETS; do
  [ "$base" = iwf ] && continue
  echo "ratio iwf/$base at 16: $(ratio "$base" 16), at 64: $(ratio "$base" 64)"
done
echo "(response times have SIPp's 1 ms resolution)"
rm -rf "$WORK"
