#!/usr/bin/env bash
# The crash test at full scale: a private Postfix relays 1,000 mails (3 recipients each,
# 3,000 MESSAGEs) to iwf while the CPM side refuses one recipient of every mail with 480 for
# the first 15 s; iwf is killed with SIGKILL twice and restarted on the same SQLite file.
# Passes when every (mail, recipient) reached the CPM side exactly once and Postfix's queue
# is empty. The test suite runs the same test with 300 mails (tests/peers/store.rs).
#
#   bench/store_crash.sh            # 1,000 mails
#   bench/store_crash.sh 2000       # another count
#
# Needs root (Postfix) and Debian's postfix and python3; prints the test's timing line.
set -euo pipefail
cd "$(dirname "$0")/.."
MAILS=${1:-1000}
IWF_CRASH_MAILS=$MAILS cargo test --test tests \
  peers::store::kill_9_twice_under_postfix_load_delivers_every_recipient_exactly_once \
  -- --nocapture 2>&1 | grep -E "killed iwf|mails, .* MESSAGEs|test result|panicked|delivered more|pairs delivered"
