#!/usr/bin/env bash
# Instructions per mail of the map bench's two cases, deterministic (no VM noise):
#   bench/map_icount.sh [MAP_BINARY] [N]
# MAP_BINARY: the bench binary (`cargo bench --bench map --no-run` prints its path; default:
# the newest target/release/deps/map-*). Runs it with MAP_COUNT=parse:0 / parse:N / full:N
# under valgrind's lackey tool and prints the instructions per parse, per parse + rules +
# render (the rule load subtracted) and their ratio. Needs valgrind (apt-get install valgrind).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$(ls -t "$ROOT"/target/release/deps/map-* 2>/dev/null | grep -v '\.d$' | head -1)}
N=${2:-1000}
command -v valgrind >/dev/null || { echo "skipped: valgrind not installed"; exit 0; }
cd "$ROOT"   # the bench loads rules/ from here
cnt() {
  MAP_COUNT=$1 valgrind --tool=lackey --basic-counts=yes "$B" --bench 2>&1 >/dev/null \
    | grep "guest instrs:" | tr -d ',' | awk '{ if ($NF > m) m = $NF } END { print m }'
}
z=$(cnt parse:0); p=$(cnt "parse:$N"); f=$(cnt "full:$N")
python3 -c "z,p,f,n=$z,$p,$f,$N; pp=(p-z)/n; ff=(f-z)/n; print(f'parse {pp:,.0f} instr/mail; parse+rules+render {ff:,.0f} instr/mail; rules+render {ff-pp:,.0f}; ratio {ff/pp:.2f}')"
