#!/usr/bin/env python3
"""Fault matrix under load (issue 14 item 4): a private Postfix relays N mails per row to
`iwf serve`, whose SIP next hop misbehaves in one way per row. Per row it counts, by a
token each mail carries in its Subject and body:

  delivered  tokens the SIP peer answered 2xx to (at least once)
  dup        extra 2xx-answered copies of a token (must be 0 where the peer answered in time)
  bounced    tokens found in a DSN in the sender's mailbox (a sink on bounce.test)
  queued     mails still in Postfix's queue (deferred or active) for cpm.example.net
  lost       N - |delivered U bounced| - queued (must be 0)
  both       tokens delivered AND bounced (must be 0)

and prints one table. Run through bench/fault_matrix.sh (see there for the options).
Everything listens on 127.0.0.1; every process started here is stopped by PID at the end.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKEN = re.compile(rb"tok-(\d+)-(\d+)")


# ---- the misbehaving SIP peer (TCP) --------------------------------------------------------

class Peer:
    """A SIP UAS on TCP whose behaviour is `mode`; records which tokens it answered 2xx."""

    def __init__(self):
        self.mode = "ok"
        self.lock = threading.Lock()
        self.ok = {}  # token -> times answered 2xx
        self.requests = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()
        # The MSRP side of the "msrp" row: answers INVITE with this path; the first attempt
        # of every mail dies mid-message (RST after its first chunk), later attempts complete.
        self.msrp_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.msrp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.msrp_sock.bind(("127.0.0.1", 0))
        self.msrp_sock.listen(128)
        self.msrp_port = self.msrp_sock.getsockname()[1]
        self.msrp_seen = set()  # tokens whose first MSRP attempt was cut
        self.msrp_cut = 0
        threading.Thread(target=self.msrp_accept, daemon=True).start()

    def reset(self, mode):
        with self.lock:
            self.mode = mode
            self.ok = {}
            self.requests = 0
            self.msrp_seen = set()
            self.msrp_cut = 0
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass
            self.conns = []

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        send_lock = threading.Lock()
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end].decode("utf-8", "replace")
                m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(buf) < end + 4 + length:
                    break
                body = buf[end + 4:end + 4 + length]
                buf = buf[end + 4 + length:]
                if head.startswith("SIP/2.0"):
                    continue  # a response (to nothing we sent)
                self.request(c, send_lock, head, body)

    def request(self, c, send_lock, head, body):
        method = head.split(" ", 1)[0]
        if method == "ACK":
            return
        with self.lock:
            self.requests += 1
            mode = self.mode
        m = TOKEN.search(body)
        token = m.group(0).decode() if m else None

        def respond(code, reason, count=True):
            out = self.response(head, code, reason)
            with send_lock:
                try:
                    c.sendall(out)
                except OSError:
                    return
            if 200 <= code < 300 and token and count:
                with self.lock:
                    self.ok[token] = self.ok.get(token, 0) + 1

        if method not in ("MESSAGE", "INVITE"):
            respond(200, "OK", count=False)
            return
        if method == "INVITE" and mode in ("ok", "slow5"):
            respond(488, "Not Acceptable Here")  # no MSRP here: pager mode only
            return
        if method == "INVITE" and mode == "msrp":
            sess = os.urandom(6).hex()
            sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   "m=message %d TCP/MSRP *\r\na=accept-types:*\r\n"
                   "a=path:msrp://127.0.0.1:%d/%s;tcp\r\na=recvonly\r\n" % (self.msrp_port, self.msrp_port, sess))
            out = self.response(head, 200, "OK", sdp.encode(), self.port)
            with send_lock:
                try:
                    c.sendall(out)
                except OSError:
                    pass
            return
        if mode in ("ok", "msrp"):
            respond(200, "OK")
        elif mode == "silent":
            pass
        elif mode == "5xx":
            respond(500, "Server Internal Error")
        elif mode == "404":
            respond(404, "Not Found")
        elif mode == "6xx":
            respond(603, "Decline")
        elif mode == "4xx":
            respond(480, "Temporarily Unavailable")
        elif mode == "413":
            respond(413, "Request Entity Too Large")
        elif mode == "slow5":
            threading.Timer(5.0, respond, args=(200, "OK")).start()
        elif mode == "rst":
            # An abortive close: RST instead of an answer.
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            except OSError:
                pass
        elif mode == "garbage":
            # Responses that do not parse or are not responses (RFC 3261 §18.1.2: discard).
            n = self.requests % 3
            if n == 0:
                junk = self.response(head, 200, "OK").replace(b"SIP/2.0 200", b"SIP/2.0 2000")
            elif n == 1:
                junk = self.response(head, 200, "OK").replace(
                    b"Content-Length: 0", b"Content-Length: 100000000000000000000")
            else:
                junk = self.response(head, 200, "OK").replace(b"SIP/2.0 200 OK", b"\x00\xff garbage \x01")
            with send_lock:
                try:
                    c.sendall(junk)
                except OSError:
                    pass

    def msrp_accept(self):
        while True:
            try:
                c, _ = self.msrp_sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self.msrp_serve, args=(c,), daemon=True).start()

    def msrp_serve(self, c):
        """MSRP SEND receiver (RFC 4975): 200 per chunk, REPORT when asked; the first attempt
        of each token is cut by an abortive close once its first chunk arrived."""
        buf = b""
        msgs = {}  # Message-ID -> bytes so far
        while True:
            m = re.match(rb"MSRP (\S+) (\S+)\r\n", buf)
            end = None
            if m:
                tid = m.group(1)
                idx = buf.find(b"-------" + tid, m.end())
                if idx >= 0 and len(buf) >= idx + 7 + len(tid) + 3:
                    end = idx
            if end is None:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                continue
            flag = buf[end + 7 + len(tid):end + 8 + len(tid)]
            frame = buf[:end]
            buf = buf[end + 7 + len(tid) + 3:]
            if m.group(2) != b"SEND":
                continue  # a response or REPORT
            hend = frame.find(b"\r\n\r\n")
            head = frame[:hend] if hend >= 0 else frame
            body = frame[hend + 4:-2] if hend >= 0 else b""
            hdr = {}
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                hdr[k.strip().lower()] = v.strip()
            mid = hdr.get(b"message-id", b"")
            got = msgs.get(mid, b"") + body
            msgs[mid] = got
            t = TOKEN.search(got)
            token = t.group(0).decode() if t else None
            if token and flag != b"$":
                with self.lock:
                    first = token not in self.msrp_seen
                    self.msrp_seen.add(token)
                    if first:
                        self.msrp_cut += 1
                if first:
                    try:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        c.close()
                    except OSError:
                        pass
                    return
            out = (b"MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n"
                   % (tid, hdr.get(b"from-path", b""), hdr.get(b"to-path", b""), tid))
            if flag == b"$":
                br = hdr.get(b"byte-range", b"1-*/*")
                if token:
                    with self.lock:
                        self.ok[token] = self.ok.get(token, 0) + 1
                if hdr.get(b"success-report", b"").lower() == b"yes":
                    rtid = os.urandom(6).hex().encode()
                    total = len(got)
                    out += (b"MSRP %s REPORT\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: %s\r\n"
                            b"Byte-Range: 1-%d/%d\r\nStatus: 000 200 OK\r\n-------%s$\r\n"
                            % (rtid, hdr.get(b"from-path", b""), hdr.get(b"to-path", b""), mid,
                               total, total, rtid))
                msgs.pop(mid, None)
                del br
            try:
                c.sendall(out)
            except OSError:
                return

    @staticmethod
    def response(head, code, reason, body=b"", contact_port=None):
        lines = head.split("\r\n")
        keep = []
        for l in lines[1:]:
            name = l.split(":", 1)[0].strip().lower()
            if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
                keep.append(l)
            elif name in ("to", "t"):
                keep.append(l if ";tag=" in l else l + ";tag=peer1")
        if body:
            keep.append("Contact: <sip:peer@127.0.0.1:%d;transport=tcp>" % contact_port)
            keep.append("Content-Type: application/sdp")
        out = "SIP/2.0 %d %s\r\n%s\r\nContent-Length: %d\r\n\r\n" % (code, reason, "\r\n".join(keep), len(body))
        return out.encode() + body


# ---- the sender's mailbox (bounce sink) -----------------------------------------------------

class Sink:
    def __init__(self):
        from aiosmtpd.controller import Controller
        self.mails = []
        sink = self

        class H:
            async def handle_DATA(self, server, session, envelope):
                sink.mails.append(envelope.original_content or envelope.content)
                return "250 2.0.0 kept"

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.ctl = Controller(H(), hostname="127.0.0.1", port=self.port)
        self.ctl.start()

    def tokens(self, row):
        out = set()
        for m in self.mails:
            for t in TOKEN.finditer(m):
                if int(t.group(1)) == row:
                    out.add(t.group(0).decode())
        return out


# ---- helpers --------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Iwf:
    def __init__(self, binary, port, peer_port, logdir, t1_ms, store):
        self.binary, self.port, self.peer_port, self.logdir, self.t1 = binary, port, peer_port, logdir, t1_ms
        self.conf = os.path.join(logdir, "iwf.yaml")
        # The durable store (default sqlite) lives in the run's directory and survives the
        # restart row's kill: a mail whose 2xx was recorded is not sent to CPM again.
        with open(self.conf, "w") as f:
            f.write("timers:\n  t1_ms: %d\nstore: %s\nstate_dir: %s\n"
                    % (t1_ms, store, os.path.join(logdir, "state")))
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = open(os.path.join(self.logdir, "iwf-%d.log" % self.starts), "w")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--rules", os.path.join(ROOT, "rules"), "--config", self.conf,
             "--smtp-listen", "127.0.0.1:%d" % self.port, "--sip-listen", "127.0.0.1:0",
             "--next-hop", "sip:127.0.0.1:%d;transport=tcp" % self.peer_port],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn", NO_COLOR="1"))
        for _ in range(100):
            if listening(self.port):
                return
            time.sleep(0.1)
        raise SystemExit("iwf did not listen on %d" % self.port)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()


class Postfix:
    def __init__(self, pf_dir, pf_port, gw_port, bounce_port):
        self.env = dict(os.environ, PF_DIR=pf_dir, PF_PORT=str(pf_port), GW_PORT=str(gw_port),
                        BOUNCE_PORT=str(bounce_port), RETRY="2s", RETRY_MAX="4s")
        self.conf = os.path.join(pf_dir, "etc")
        self.port = pf_port
        self.script = os.path.join(ROOT, "tests", "peers", "postfix-relay.sh")

    def run(self, *args):
        return subprocess.run(["bash", self.script, *args], env=self.env, capture_output=True, text=True)

    def start(self):
        r = self.run("start")
        if r.returncode:
            raise SystemExit("postfix start failed: %s %s" % (r.stdout, r.stderr))

    def stop(self):
        self.run("stop")

    def queue(self, row=None):
        """(this row's entries, all entries). A row's mails go to +1555<row*100000+i>; one the
        queue manager is working on may list no recipients: then the sender decides."""
        r = subprocess.run(["timeout", "20", "/usr/sbin/postqueue", "-c", self.conf, "-j"],
                           capture_output=True, text=True)
        cpm = total = 0
        seen = set()
        for line in r.stdout.splitlines():
            try:
                q = json.loads(line)
            except ValueError:
                continue
            # A message moving between queues while postqueue walks them can be listed
            # twice; its queue ID stays the same.
            if q.get("queue_id") in seen:
                continue
            seen.add(q.get("queue_id"))
            total += 1
            rcpts = [rc.get("address", "") for rc in q.get("recipients", [])]
            if row is not None and rcpts:
                if any(a.startswith("+1555%02d" % row) and a.endswith("@cpm.example.net") for a in rcpts):
                    cpm += 1
            elif q.get("sender") == "sender@bounce.test" or any(a.endswith("@cpm.example.net") for a in rcpts):
                cpm += 1
        return cpm, total

    def flush(self):
        subprocess.run(["timeout", "10", "/usr/sbin/postqueue", "-c", self.conf, "-f"], capture_output=True)

    def clear(self):
        """Deletes every queued message and waits (up to 60 s) until the queue is empty: a
        message the queue manager holds is deleted only when it lets go of it, and would
        otherwise be counted in the next row."""
        for _ in range(60):
            subprocess.run(["timeout", "20", "/usr/sbin/postsuper", "-c", self.conf, "-d", "ALL"], capture_output=True)
            if self.queue()[1] == 0:
                return
            time.sleep(1)


def send(port, row, n, large=False):
    import smtplib
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    s.ehlo("client.iwf.test")
    # Large Message Mode (MSRP) for mails over 4 * pager_max_bytes: ~20 KB, ten chunks.
    filler = "".join("line %03d of a mail that goes by MSRP, in chunks\r\n" % k for k in range(400)) if large else ""
    for i in range(n):
        tok = "tok-%d-%d" % (row, i)
        rcpt = "+1555%07d@cpm.example.net" % (row * 100000 + i)
        msg = ("From: sender@bounce.test\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@bounce.test>\r\n\r\n"
               "fault matrix %s\r\n%s" % (rcpt, tok, tok, tok, filler))
        s.sendmail("sender@bounce.test", [rcpt], msg)
    s.quit()


# ---- the matrix -----------------------------------------------------------------------------

ROWS = ["ok", "silent", "5xx", "404", "6xx", "4xx", "rst", "slow5", "garbage", "413", "msrp", "restart"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iwf", required=True)
    ap.add_argument("-n", type=int, default=1000, help="mails per row (default 1000)")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    ap.add_argument("--settle", type=float, default=60, help="seconds a row may take after sending")
    ap.add_argument("--tolerate-restart-dups", action="store_true",
                    help="do not fail on duplicates in the restart row (known: no durable dedup yet)")
    ap.add_argument("--t1-ms", type=int, default=100, help="iwf SIP T1 (Timer F = 64*T1), default 100")
    ap.add_argument("--slow-settle", type=float, default=300,
                    help="the slow5 row's settle time (Postfix's 20 connections x 5 s a mail: 4 mails/s)")
    ap.add_argument("--store", default="sqlite", help="iwf store: sqlite (default, in the run directory) or memory")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="iwf-fault-")
    os.chmod(work, 0o755)
    peer = Peer()
    sink = Sink()
    gw_port, pf_port = free_port(), free_port()
    iwf = Iwf(a.iwf, gw_port, peer.port, work, a.t1_ms, a.store)
    pf = Postfix(os.path.join(work, "pf"), pf_port, gw_port, sink.port)
    results = []
    try:
        pf.start()
        for row_no, row in enumerate(a.rows.split(","), start=1):
            peer.reset("ok" if row == "restart" else row)
            pf.clear()
            iwf.start()
            t0 = time.time()
            sender = threading.Thread(target=send, args=(pf.port, row_no, a.n, row == "msrp"))
            sender.start()
            restarted = False
            deadline = t0 + (a.slow_settle if row == "slow5" else a.settle)
            while time.time() < deadline:
                # the restart row watches closely, to kill iwf with mails in flight
                time.sleep(0.02 if row == "restart" and not restarted else 1)
                with peer.lock:
                    ok = len(peer.ok)
                if row == "restart" and not restarted and ok >= a.n // 2:
                    iwf.kill()
                    time.sleep(1)
                    iwf.start()
                    pf.flush()
                    restarted = True
                bounced = len(sink.tokens(row_no))
                if not sender.is_alive() and ok + bounced >= a.n:
                    break
            sender.join()
            elapsed = time.time() - t0
            # End the row: iwf stops (in-flight transactions get their answers), Postfix
            # puts what it could not hand over back into its queue.
            iwf.stop()
            time.sleep(3)
            # (sampled a few times: a message moving between queues may be missed once)
            queued = 0
            for _ in range(3):
                queued = max(queued, pf.queue(row_no)[0])
                time.sleep(1)
            with peer.lock:
                ok = dict(peer.ok)
            delivered = set(ok)
            dup = sum(v - 1 for v in ok.values())
            bounced = sink.tokens(row_no)
            lost = a.n - len(delivered | bounced) - queued
            results.append(dict(row=row, sent=a.n, delivered=len(delivered), bounced=len(bounced),
                                queued=queued, dup=dup, lost=lost, both=len(delivered & bounced),
                                cut=peer.msrp_cut, seconds=round(elapsed, 1)))
            print("row %-8s done in %5.1f s: %s" % (row, elapsed, results[-1]), file=sys.stderr, flush=True)
    finally:
        iwf.stop()
        pf.clear()
        pf.stop()
        sink.ctl.stop()
    print()
    print("| row | sent | delivered | bounced | queued | dup | lost | delivered and bounced | MSRP cut | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print("| %(row)s | %(sent)d | %(delivered)d | %(bounced)d | %(queued)d | %(dup)d | %(lost)d | %(both)d | %(cut)d | %(seconds)s |" % r)
    print()
    print("logs: %s" % work)
    # A SIGKILL between the SIP 2xx and our 250 makes Postfix send the mail again ("lost
    # connection ... while sending end of data -- message may be sent more than once"):
    # without a durable record of delivered transactions that is a duplicate.
    bad = [r["row"] for r in results if r["lost"] != 0 or r["both"] != 0 or
           (r["dup"] != 0 and not (r["row"] == "restart" and a.tolerate_restart_dups))]
    if bad:
        print("FAILED rows: %s" % ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
