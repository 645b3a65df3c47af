#!/usr/bin/env python3
"""Soak (issue 14 item 5): `iwf serve` at half its maximum rate for a while, with a rule
reload every minute, RSS and open file descriptors sampled every 10 s and printed as a
series. Run through bench/soak.sh (options there).

1. Maximum rate: `--workers` SMTP clients send as fast as they can for `--probe` seconds
   (one mail per transaction, several transactions per connection) to iwf, whose SIP next
   hop is the TCP peer of bench/fault_matrix.py answering 200.
2. Soak: the same clients paced to half that rate for `--minutes`; every 60 s a comment
   line is appended to a rule file of iwf's (copied) rule directory, which the watcher
   reloads (checked through iwf_rules_generation on the metrics endpoint).
3. Every 10 s: time, mails sent/ok/failed so far, RSS (VmRSS), open fds, rule generation.

Loopback only; iwf is stopped by PID at the end.
"""

import argparse
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from fault_matrix import Peer, free_port, listening  # noqa: E402


class Load:
    def __init__(self, port, workers):
        self.port = port
        self.workers = workers
        self.rate = None  # mails/s over all workers; None = as fast as possible
        self.stop = False
        self.lock = threading.Lock()
        self.ok = self.failed = 0
        self.threads = [threading.Thread(target=self.run, args=(w,), daemon=True) for w in range(workers)]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self, w):
        n = 0
        s = None
        next_at = time.time()
        while not self.stop:
            rate = self.rate
            if rate:
                next_at += self.workers / rate
                delay = next_at - time.time()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -5:
                    next_at = time.time()  # far behind: do not burst to catch up
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
                    s.ehlo("soak.iwf.test")
                n += 1
                rcpt = "+1555%03d%04d@cpm.example.net" % (w, n % 10000)
                msg = "From: soak@mail.example.org\r\nTo: %s\r\nSubject: soak %d %d\r\n\r\nsoak\r\n" % (rcpt, w, n)
                s.sendmail("soak@mail.example.org", [rcpt], msg)
                with self.lock:
                    self.ok += 1
                if n % 50 == 0:  # new connections now and then, too
                    s.quit()
                    s = None
            except (smtplib.SMTPException, OSError):
                with self.lock:
                    self.failed += 1
                try:
                    if s:
                        s.close()
                except OSError:
                    pass
                s = None
                time.sleep(0.1)

    def counts(self):
        with self.lock:
            return self.ok, self.failed


def proc_sample(pid):
    """(VmRSS, RssAnon, RssFile + RssShmem, open fds): anonymous memory is the heap (ours,
    SQLite's page caches); file/shared is the mapped binary and SQLite's WAL index (-shm)."""
    v = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                v[k] = int(rest.split()[0])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return v.get("VmRSS", 0), v.get("RssAnon", 0), v.get("RssFile", 0) + v.get("RssShmem", 0), fds


def db_size(state):
    """KiB of the SQLite database and its WAL."""
    total = 0
    for name in ("iwf.sqlite3", "iwf.sqlite3-wal"):
        try:
            total += os.path.getsize(os.path.join(state, name))
        except OSError:
            pass
    return total // 1024


def generation(metrics_port):
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=5).read().decode()
    except OSError:
        return "?"
    for line in body.splitlines():
        if line.startswith("iwf_rules_generation"):
            return line.split()[-1]
    return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iwf", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--probe", type=float, default=20, help="seconds of the maximum-rate probe")
    ap.add_argument("--rate", type=float, default=0, help="mails/s for the soak (default: half the probed maximum)")
    ap.add_argument("--store", default="sqlite", help="iwf store (default sqlite, in the run directory)")
    ap.add_argument("--store-max-records", type=int, default=0,
                    help="store bound (iwf default 1,000,000); a small one shows the store at its bound")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="iwf-soak-")
    # The store lives in the run's directory (not ./state of wherever this was started,
    # which earlier soaks reused from run to run).
    state = os.path.join(work, "state")
    conf = os.path.join(work, "iwf.yaml")
    with open(conf, "w") as f:
        f.write("store: %s\nstate_dir: %s\n" % (a.store, state))
        if a.store_max_records:
            f.write("store_max_records: %d\n" % a.store_max_records)
    rules = os.path.join(work, "rules")
    shutil.copytree(os.path.join(ROOT, "rules"), rules)
    peer = Peer()
    port, mport = free_port(), free_port()
    log = open(os.path.join(work, "iwf.log"), "w")
    proc = subprocess.Popen(
        [a.iwf, "serve", "--rules", rules, "--config", conf, "--smtp-listen", "127.0.0.1:%d" % port, "--sip-listen", "127.0.0.1:0",
         "--next-hop", "sip:127.0.0.1:%d;transport=tcp" % peer.port, "--metrics-listen", "127.0.0.1:%d" % mport],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn", NO_COLOR="1"))
    try:
        for _ in range(100):
            if listening(port):
                break
            time.sleep(0.1)
        load = Load(port, a.workers)
        load.start()
        time.sleep(2)
        ok0, _ = load.counts()
        time.sleep(a.probe)
        ok1, failed = load.counts()
        max_rate = (ok1 - ok0) / a.probe
        rate = a.rate or max_rate / 2
        load.rate = rate
        print("maximum rate: %.0f mails/s over %.0f s (%d workers, %d failures); soak at %.0f mails/s for %g min"
              % (max_rate, a.probe, a.workers, failed, rate, a.minutes), flush=True)
        time.sleep(5)
        print()
        print("| t (s) | mails ok | failed | rate (/s) | RSS (KiB) | anon (KiB) | file+shm (KiB) | open fds | rules generation | store file (KiB) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        start = time.time()
        last_reload = start
        reloads = 0
        prev_ok, prev_t = load.counts()[0], start
        series = []
        while time.time() - start < a.minutes * 60:
            time.sleep(10 - ((time.time() - start) % 10))
            now = time.time()
            if now - last_reload >= 60:
                reloads += 1
                with open(os.path.join(rules, "80-transaction.yaml"), "a") as f:
                    f.write("# soak reload %d\n" % reloads)
                last_reload = now
            ok, failed = load.counts()
            rss, anon, mapped, fds = proc_sample(proc.pid)
            r = (ok - prev_ok) / (now - prev_t)
            prev_ok, prev_t = ok, now
            series.append((rss, fds))
            print("| %.0f | %d | %d | %.0f | %d | %d | %d | %d | %s | %d |"
                  % (now - start, ok, failed, r, rss, anon, mapped, fds, generation(mport), db_size(state)),
                  flush=True)
        load.stop = True
        rss = [s[0] for s in series]
        fds = [s[1] for s in series]
        print()
        print("RSS KiB: first %d, min %d, max %d, last %d; open fds: first %d, min %d, max %d, last %d; %d reloads"
              % (rss[0], min(rss), max(rss), rss[-1], fds[0], min(fds), max(fds), fds[-1], reloads))
        print("SIP requests the peer answered: %d; mails the clients saw accepted: %d" % (peer.requests, load.counts()[0]))
        print("log: %s" % os.path.join(work, "iwf.log"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
