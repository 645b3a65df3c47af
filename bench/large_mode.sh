#!/usr/bin/env bash
# Large Message Mode benchmark against real peers on loopback, one run:
#   smtp-source -> iwf serve (release) -> Kamailio (SIP answerer + MSRP endpoint)
# * sessions/s and MB/s for 100 KB and 1 MB mails, MSRP chunks of 2 KB and 10 KB
#   (SMTP connections reused, SESSIONS concurrent; plus one sequential row);
# * the Python MSRP client baseline (bench/large/sip_msrp_flow.py: INVITE + chunks + BYE,
#   sequential, no SMTP) against the same Kamailio in the same run;
# * peak RSS (VmHWM) of a fresh iwf process delivering one 10 MB mail (10 KB chunks).
# Prints a markdown table. Every run is bounded (timeout) and everything started here is
# stopped by PID on exit.
#   bench/large_mode.sh                      # defaults below
#   N100K=1000 N1M=100 SESSIONS=16 bench/large_mode.sh
#   ONLY_RSS=1 bench/large_mode.sh           # only the 10 MB peak-RSS figure
#   ONLY_RSS=1 RSS_TRACE=/tmp/rss.txt bench/large_mode.sh  # and its memory over time
# Needs: kamailio, smtp-source (postfix), python3; builds target/release/iwf if missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IWF=${IWF:-$ROOT/target/release/iwf}
N100K=${N100K:-2000}     # 100 KB mails per run
N1M=${N1M:-300}          # 1 MB mails per run
NSEQ=${NSEQ:-500}        # 100 KB mails, one session
SESSIONS=${SESSIONS:-16} # concurrent SMTP sessions
NPY=${NPY:-1000}         # Python baseline sessions
BIG=${BIG:-10000000}     # the RSS mail's payload
ONLY_RSS=${ONLY_RSS:-}   # set: only the peak-RSS figure (skips the throughput tables)
RSS_MAILS=${RSS_MAILS:-1} # big mails the RSS process delivers, one after the other

for bin in kamailio smtp-source python3; do
  command -v "$bin" >/dev/null || { echo "skipped: $bin not installed"; exit 0; }
done
[ -x "$IWF" ] || (cd "$ROOT" && cargo build --release --quiet)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/iwf-large-bench.XXXXXX")
IWF_PID=
cleanup() {
  [ -n "$IWF_PID" ] && kill "$IWF_PID" 2>/dev/null && wait "$IWF_PID" 2>/dev/null || true
  KAM_DIR=$WORK/kam "$ROOT/tests/peers/kamailio/run.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A port free for both TCP and UDP on 127.0.0.1.
free_port() {
  python3 - <<'EOF'
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
EOF
}

SIP_PORT=$(free_port)
MSRP_PORT=$(free_port)
KAM_DIR=$WORK/kam KAM_SIP_PORT=$SIP_PORT KAM_MSRP_PORT=$MSRP_PORT \
  "$ROOT/tests/peers/kamailio/run.sh" start >/dev/null

# start_iwf CHUNK: a fresh iwf serve with that MSRP chunk size; sets IWF_PID, SMTP, LOG.
start_iwf() {
  local chunk=$1
  [ -n "$IWF_PID" ] && { kill "$IWF_PID"; wait "$IWF_PID" 2>/dev/null || true; }
  LOG=$WORK/iwf-$chunk-$RANDOM.log
  cat >"$WORK/iwf.yaml" <<EOF
rules: $ROOT/rules
smtp_listen: 127.0.0.1:0
sip_listen: 127.0.0.1:0
next_hop: "sip:127.0.0.1:$SIP_PORT;transport=udp"
limits:
  connections_per_ip: 200
large:
  chunk_size: $chunk
EOF
  RUST_LOG=warn,iwf::gateway=info,iwf::transaction=info NO_COLOR=1 "$IWF" serve --config "$WORK/iwf.yaml" >"$LOG" 2>&1 &
  IWF_PID=$!
  for _ in $(seq 100); do
    SMTP=$(sed -n 's/.*ESMTP listening on \([0-9.:]*\).*/\1/p' "$LOG")
    [ -n "$SMTP" ] && return 0
    sleep 0.05
  done
  echo "iwf did not start:"; cat "$LOG"; exit 1
}

delivered() { grep -cE 'outcome="?delivered' "$LOG" || true; }

# load SIZE COUNT SESSIONS -> prints "sessions/s MB/s delivered/count"
load() {
  local size=$1 count=$2 sessions=$3 before after t0 t1
  before=$(delivered)
  t0=$(date +%s.%N)
  timeout 300 smtp-source -d -s "$sessions" -l "$size" -m "$count" \
    -f sender@example.org -t alice@cpm.example.net "$SMTP" 2>>"$WORK/smtp-source.err" || true
  t1=$(date +%s.%N)
  after=$(delivered)
  python3 -c "
n=$after-$before; el=$t1-$t0
print(f'{n/el:.0f} {n*$size/el/1e6:.1f} {n}/$count')"
}

echo "# Large Message Mode benchmark, $(date -u +%FT%TZ), $(nproc) cores, iwf $(git -C "$ROOT" rev-parse --short HEAD)"
echo
if [ -z "$ONLY_RSS" ]; then
echo "| sender | mail | chunk | SMTP sessions | sessions/s | MB/s | delivered |"
echo "|---|---|---|---|---|---|---|"
for chunk in 2048 10240; do
  start_iwf "$chunk"
  for spec in "102400 $N100K $SESSIONS" "1048576 $N1M $SESSIONS" "102400 $NSEQ 1"; do
    set -- $spec
    read -r rate mbs ok < <(load "$1" "$2" "$3")
    echo "| smtp-source → iwf → Kamailio | $(($1 / 1024)) KB | $((chunk / 1024)) KB | $3 | $rate | $mbs | $ok |"
  done
done
for chunk in 2048 10240; do
  out=$(timeout 300 python3 "$ROOT/bench/large/sip_msrp_flow.py" --peer "127.0.0.1:$SIP_PORT" \
        --size 102400 --chunk "$chunk" --count "$NPY" | tail -1)
  rate=$(sed -n 's/.*sessions\/s=\([0-9]*\).*/\1/p' <<<"$out")
  n=$(sed -n 's/^sessions=\([0-9]*\).*/\1/p' <<<"$out")
  mbs=$(python3 -c "print(f'{${rate:-0}*102400/1e6:.1f}')")
  echo "| Python MSRP client (baseline, no SMTP) → Kamailio | 100 KB | $((chunk / 1024)) KB | 1 | ${rate:-?} | $mbs | $n/$NPY |"
done
fi

# Peak RSS of a fresh process delivering one big mail.
start_iwf 10240
idle=$(awk '/VmHWM/ {print $2}' /proc/$IWF_PID/status)
SAMPLER=
if [ -n "${RSS_TRACE:-}" ]; then
  python3 "$ROOT/bench/large/rss_trace.py" "$IWF_PID" "$RSS_TRACE" &
  SAMPLER=$!
  sleep 0.3 # the sampler is running before the mail starts
fi
read -r _ _ ok < <(load "$BIG" 1 1)
peak=$(awk '/VmHWM/ {print $2}' /proc/$IWF_PID/status)
echo
echo "| peak RSS, one $((BIG / 1000000)) MB mail, 10 KB chunks | VmHWM kB | × mail size |"
echo "|---|---|---|"
echo "| fresh iwf, idle | $idle | |"
echo "| after delivering it ($ok delivered) | $peak | $(python3 -c "print(f'{$peak*1024/$BIG:.2f}')") |"
# The same process, more of the same mail one after the other (a warm allocator).
for n in $(seq 2 "$RSS_MAILS"); do
  read -r _ _ ok < <(load "$BIG" 1 1)
  peak=$(awk '/VmHWM/ {print $2}' /proc/$IWF_PID/status)
  echo "| after mail $n ($ok delivered) | $peak | $(python3 -c "print(f'{$peak*1024/$BIG:.2f}')") |"
done
[ -n "$SAMPLER" ] && { kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null || true; }
if [ -s "$WORK/smtp-source.err" ]; then
  echo; echo "smtp-source complained:"; sort "$WORK/smtp-source.err" | uniq -c | head
fi
