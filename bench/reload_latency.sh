#!/bin/sh
# Time from a rule file's save to the new rule-set generation serving, over 50 saves
# (in place, `sed -i`, write + rename, in turn) with the default debounce. Runs the
# ignored test `ops::reload_latency` against the release binary: it starts `iwf serve`
# on loopback, saves the marker rule, and polls GET /metrics (iwf_rules_generation,
# set right after the swap) every millisecond until the generation moves.
#
# Usage: bench/reload_latency.sh   (from the repository root)
set -eu
cd "$(dirname "$0")/.."
exec cargo test --release --test tests ops::reload_latency -- --ignored --nocapture
