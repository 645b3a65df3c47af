#!/usr/bin/env python3
"""Interop matrix: mail senders x CPM receivers x cases, through a real `iwf serve`, printed
as one table (every cell PASS, FAIL with what was seen, or n/a with the reason).

Senders:   smtplib (Python's client, direct), swaks (direct), postfix (a private Postfix
           instance relaying to iwf, tests/peers/postfix-relay.sh; needs root), exim (a
           private Exim with DSN on, binary at /usr/sbin/exim4 as .ci/run installs it)
Receivers: sipp (SIPp UAS scenarios from tests/peers/sipp: 200, 404, 486; MESSAGE only),
           baresip (a real text-only UA: 415 to CPIM, 488 to MSRP, 404 to unknown users)
Cases:     pager (one short text), notify (NOTIFY=SUCCESS,FAILURE + Disposition-Notification-To),
           large (20 KB of text), several (three recipients in To/Cc), 404, 486, utf8

For each (receiver, case) a fresh receiver and iwf are started; iwf's smarthost is an
aiosmtpd sink that keeps DSNs. Loopback only; everything started is stopped.

Usage: bench/interop_matrix.py [--iwf target/release/iwf] [--senders smtplib,swaks,postfix,exim]
                               [--receivers sipp,baresip] [--cases pager,notify,...]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "tests", "peers")
CASES = ["pager", "notify", "large", "several", "404", "486", "utf8"]


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(pred, limit=10.0, step=0.1):
    end = time.time() + limit
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


class Proc:
    def __init__(self, args, stdin=subprocess.DEVNULL, **kw):
        self.out = tempfile.TemporaryFile()
        self.p = subprocess.Popen(args, stdin=stdin, stdout=self.out, stderr=subprocess.STDOUT, **kw)

    def text(self):
        self.out.seek(0)
        return self.out.read().decode("utf-8", "replace")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def metric(port, sample):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


# ---------------------------------------------------------------------------------------
# receivers


class Sipp:
    """SIPp UAS for one status; counts MESSAGEs from its message trace."""

    def __init__(self, status):
        self.port = free_port(socket.SOCK_DGRAM)
        self.dir = tempfile.mkdtemp()
        scen = os.path.join(PEERS, "sipp", f"message_uas_{status}.xml")
        self.proc = Proc(["sipp", "-sf", scen, "-i", "127.0.0.1", "-p", str(self.port), "-t", "u1",
                          "-nostdin", "-trace_msg", "-message_file", os.path.join(self.dir, "msg.log")],
                         cwd=self.dir)
        time.sleep(0.5)
        self.uri = lambda user: f"sip:{user}@127.0.0.1:{self.port}"
        self.next_hop = f"sip:127.0.0.1:{self.port};transport=udp"

    def messages(self):
        try:
            text = open(os.path.join(self.dir, "msg.log"), encoding="utf-8", errors="replace").read()
        except OSError:
            return 0
        return text.count("MESSAGE sip:")

    def stop(self):
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Baresip:
    def __init__(self):
        self.dir = tempfile.mkdtemp()
        self.port = free_port()
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write(f"sip_listen 127.0.0.1:{self.port}\nmodule_path /usr/lib/baresip/modules\n"
                    "module stdio.so\nmodule g711.so\nmodule_app account.so\n"
                    "module_app contact.so\nmodule_app menu.so\n")
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write("<sip:phone@127.0.0.1>;regint=0\n")
        open(os.path.join(self.dir, "contacts"), "w").close()
        self.proc = Proc(["baresip", "-f", self.dir, "-n", "127.0.0.1"], stdin=subprocess.PIPE)
        wait_for(lambda: "baresip is ready" in self.proc.text())
        self.uri = lambda user: f"sip:{user}@127.0.0.1:{self.port};transport=tcp"
        self.next_hop = None

    def messages(self):
        return None  # counted through iwf's metrics instead

    def stop(self):
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# senders


def smtplib_send(smtp_port, rcpts, data, rcpt_opts):
    spec = {"ehlo": "client.interop.test", "timeout": 60, "transactions": [{
        "mail_from": "alice@bounce.test", "rcpts": [[r, rcpt_opts] for r in rcpts], "data": data}]}
    r = subprocess.run([sys.executable, os.path.join(PEERS, "smtp_client.py"), "127.0.0.1", str(smtp_port)],
                       input=json.dumps(spec).encode(), capture_output=True, timeout=90)
    try:
        t = json.loads(r.stdout)["transactions"][0]
    except (ValueError, KeyError, IndexError):
        return None, r.stderr.decode(errors="replace")[-300:]
    if t.get("data"):
        return t["data"][0], t["data"][1]
    return t["rcpts"][0][0], t["rcpts"][0][1]


def swaks_send(smtp_port, rcpts, data, rcpt_opts):
    if rcpt_opts:
        return None, "n/a: swaks sends no RCPT parameters (NOTIFY)"
    if any(r.startswith("+") for r in rcpts):
        return None, "n/a: swaks reads +E.164 as an option"
    with tempfile.NamedTemporaryFile("w", suffix=".eml", delete=False) as f:
        f.write(data.replace("\n", "\r\n"))
        path = f.name
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{smtp_port}", "--from", "alice@bounce.test",
                        "--to", ",".join(rcpts), "--data", f"@{path}", "--timeout", "60"],
                       capture_output=True, timeout=90)
    os.unlink(path)
    out = r.stdout.decode(errors="replace")
    replies = [l[4:].strip() for l in out.splitlines() if l.startswith("<~ ") or l.startswith("<- ")
               or l.startswith("<** ")]
    # the reply to the end of data is the last before QUIT's 221
    after = [x for x in replies if not x.startswith("221")]
    last = after[-1] if after else ""
    try:
        return int(last[:3]), last
    except ValueError:
        return None, out[-300:]


class Postfix:
    def __init__(self, gw_port, bounce_port):
        self.dir = tempfile.mkdtemp()
        os.chmod(self.dir, 0o755)  # Postfix's daemons (user postfix) must reach the queue
        self.port = free_port()
        self.env = dict(os.environ, PF_DIR=os.path.join(self.dir, "pf"), PF_PORT=str(self.port),
                        GW_PORT=str(gw_port), BOUNCE_PORT=str(bounce_port), RETRY="2s", RETRY_MAX="4s")
        r = subprocess.run(["bash", os.path.join(PEERS, "postfix-relay.sh"), "start"], env=self.env,
                           capture_output=True, timeout=90)
        self.ok = r.returncode == 0

    def log(self):
        try:
            return open(os.path.join(self.dir, "pf", "maillog"), errors="replace").read()
        except OSError:
            return ""

    def stop(self):
        subprocess.run(["bash", os.path.join(PEERS, "postfix-relay.sh"), "stop"], env=self.env,
                       capture_output=True, timeout=90)
        shutil.rmtree(self.dir, ignore_errors=True)


class Exim:
    """A private Exim (the binary at /usr/sbin/exim4, as .ci/run installs it) relaying to iwf."""

    def __init__(self, gw_port, bounce_port):
        self.dir = tempfile.mkdtemp()
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        d = self.dir
        for sub in ("spool", "log"):
            os.makedirs(os.path.join(d, sub))
            subprocess.run(["chown", "Debian-exim", os.path.join(d, sub)])
        conf = os.path.join(d, "exim.conf")
        with open(conf, "w") as f:
            f.write(f"""primary_hostname = exim.interop.test
spool_directory = {d}/spool
log_file_path = {d}/log/%slog
local_interfaces = 127.0.0.1
dsn_advertise_hosts = *
tls_advertise_hosts =
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  accept hosts = 127.0.0.1
  deny
begin routers
to_iwf:
  driver = manualroute
  domains = cpm.example.net
  transport = to_iwf
  route_list = * 127.0.0.1
  self = send
to_sink:
  driver = manualroute
  domains = bounce.test
  transport = to_sink
  route_list = * 127.0.0.1
  self = send
begin transports
to_iwf:
  driver = smtp
  port = {gw_port}
to_sink:
  driver = smtp
  port = {bounce_port}
begin retry
* * F,10m,2s
""")
        self.proc = Proc(["/usr/sbin/exim4", "-C", conf, "-bdf", "-q2s", "-oX", str(self.port)])
        self.ok = bool(wait_for(lambda: listening(self.port)))

    def log(self):
        try:
            return open(os.path.join(self.dir, "log", "mainlog"), errors="replace").read()
        except OSError:
            return ""

    def stop(self):
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def exim_send(ex, rcpts, data, rcpt_opts):
    code, text = smtplib_send(ex.port, rcpts, data, rcpt_opts)
    if code != 250:
        return code, f"exim did not queue: {text}"
    line = wait_for(lambda: next((l for l in ex.log().splitlines()
                                  if rcpts[0] in l and (" => " in l or " ** " in l or " == " in l)), None),
                    limit=60, step=0.3)
    if not line:
        return None, "no verdict in the Exim log"
    for mark, code in ((" => ", 250), (" ** ", 550), (" == ", 450)):
        if mark in line:
            return code, line.split(mark, 1)[1][:160]
    return None, line[-160:]


def postfix_send(pf, rcpts, data, rcpt_opts):
    code, text = smtplib_send(pf.port, rcpts, data, rcpt_opts)
    if code != 250:
        return code, f"postfix did not queue: {text}"
    # Postfix's verdict: sent (250 from iwf), bounced (5xx), deferred (4xx)
    line = wait_for(lambda: next((l for l in pf.log().splitlines()
                                  if "relay=127.0.0.1" in l and "status=" in l
                                  and all(r.lower() in l.lower() for r in rcpts[:1])
                                  and l not in pf.seen), None), limit=60, step=0.3)
    if not line:
        return None, "no verdict in the Postfix log"
    pf.seen.add(line)
    for status, code in (("status=sent", 250), ("status=bounced", 550), ("status=deferred", 450)):
        if status in line:
            return code, line.split("status=", 1)[1][:160]
    return None, line[-160:]


# ---------------------------------------------------------------------------------------
# cases

LONG = "".join(f"line {i:03} of a long text that does not fit a pager-mode MESSAGE.\n" for i in range(300))


def case_mail(case, to, others):
    head = f"From: Alice <alice@bounce.test>\nTo: {to}\nSubject: interop {case}\n"
    if case == "several":
        head = f"From: Alice <alice@bounce.test>\nTo: {to}, {others[0]}\nCc: {others[1]}\nSubject: interop several\n"
    if case == "notify":
        head += "Disposition-Notification-To: alice@bounce.test\n"
    if case == "utf8":
        return ("From: Alice <alice@bounce.test>\nTo: " + to + "\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
                "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
                "Grüße aus Köln ✓\n")
    body = LONG if case == "large" else f"interop {case} text\n"
    return head + "\n" + body


def run_cell(args, sender, receiver, case):
    """Returns (verdict, detail)."""
    if receiver == "sipp" and case == "large":
        return "n/a", "the SIPp scenarios answer MESSAGE only (large mode is tested with Kamailio)"
    if receiver == "baresip" and case == "486":
        return "n/a", "baresip answers 486 only during a call"
    status = {"404": 404, "486": 486}.get(case, 200)
    rx = Sipp(status) if receiver == "sipp" else Baresip()
    user = "phone" if receiver == "baresip" else "user"
    if receiver == "baresip" and case == "404":
        user = "nobody"  # baresip answers 404 to users it has no account for
    rules = tempfile.mkdtemp()
    shutil.copytree(os.path.join(ROOT, "rules"), rules, dirs_exist_ok=True)
    with open(os.path.join(rules, "tables", "directory.yaml"), "a") as f:
        f.write(f'phone@cpm.example.net: "{rx.uri(user)}"\n')
    sink_dir = tempfile.mkdtemp()
    sink_port = free_port()
    sink = Proc(["/usr/bin/python3", os.path.join(PEERS, "sink.py"), str(sink_port), sink_dir])
    wait_for(lambda: listening(sink_port))
    metrics = free_port()
    smtp = free_port()
    cfg = os.path.join(sink_dir + ".yaml")  # not in the rules directory: it would be read as rules
    with open(cfg, "w") as f:
        f.write(f"smarthost: 127.0.0.1:{sink_port}\nmetrics_listen: 127.0.0.1:{metrics}\n"
                "timers: {t1_ms: 100}\nlimits: {connections_per_ip: 500}\n")
    cmd = [args.iwf, "serve", "--rules", rules, "--config", cfg, "--smtp-listen", f"127.0.0.1:{smtp}",
           "--sip-listen", "127.0.0.1:0"]
    if rx.next_hop:
        cmd += ["--next-hop", rx.next_hop]
    iwf = Proc(cmd, env=dict(os.environ, RUST_LOG="warn"))
    pf = None
    try:
        if not wait_for(lambda: listening(smtp)):
            return "FAIL", "iwf did not start: " + iwf.text()[-300:]
        rcpt = "phone@cpm.example.net"
        data = case_mail(case, rcpt, ["+15551234567@cpm.example.net", "carol@mail.example.org"])
        opts = ["NOTIFY=SUCCESS,FAILURE"] if case == "notify" else []
        if sender == "smtplib":
            code, text = smtplib_send(smtp, [rcpt], data, opts)
        elif sender == "swaks":
            code, text = swaks_send(smtp, [rcpt], data, opts)
        elif sender == "exim":
            if not os.access("/usr/sbin/exim4", os.X_OK):
                return "n/a", "no /usr/sbin/exim4 (.ci/run installs it)"
            pf = Exim(smtp, sink_port)
            if not pf.ok:
                return "n/a", "the private Exim does not start (needs root): " + pf.proc.text()[-200:]
            code, text = exim_send(pf, [rcpt], data, opts)
        else:
            pf = Postfix(smtp, sink_port)
            pf.seen = set()
            if not pf.ok:
                return "n/a", "the private Postfix does not start (needs root)"
            code, text = postfix_send(pf, [rcpt], data, opts)
        if code is None and text.startswith("n/a"):
            return "n/a", text[5:]
        want = {"404": 550, "486": 450}.get(case, 250)
        if code != want:
            return "FAIL", f"wanted {want}, got {code}: {text}"
        notes = []
        if receiver == "sipp" and want == 250 and rx.messages() < 1:
            return "FAIL", "SIPp saw no MESSAGE"
        if receiver == "baresip" and want == 250:
            n415 = metric(metrics, 'iwf_sip_requests_total{mode="pager",method="MESSAGE",status="415"}')
            if n415 > 1:
                return "FAIL", f"{n415:.0f} 415s for one peer"
            if case == "several" and "interop several text" not in rx.proc.text():
                return "FAIL", "the phone did not show the text"
        if case == "notify" and receiver == "baresip":
            dsn = wait_for(lambda: any("Action: relayed" in open(os.path.join(sink_dir, n), errors="replace").read()
                                       for n in os.listdir(sink_dir) if n.endswith(".eml")), limit=10)
            if not dsn:
                return "FAIL", "no relayed DSN at the smarthost"
            notes.append("relayed DSN")
        return "PASS", f"{code} " + " ".join(notes)
    finally:
        if pf:
            pf.stop()
        iwf.stop()
        rx.stop()
        sink.stop()
        shutil.rmtree(rules, ignore_errors=True)
        shutil.rmtree(sink_dir, ignore_errors=True)
        if os.path.exists(cfg):
            os.unlink(cfg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iwf", default=os.path.join(ROOT, "target", "release", "iwf"))
    ap.add_argument("--senders", default="smtplib,swaks,postfix,exim")
    ap.add_argument("--receivers", default="sipp,baresip")
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    rows = []
    for receiver in args.receivers.split(","):
        for case in args.cases.split(","):
            for sender in args.senders.split(","):
                started = time.time()
                verdict, detail = run_cell(args, sender, receiver, case)
                rows.append((sender, receiver, case, verdict, detail.strip(), time.time() - started))
                print(f"{sender:8} {receiver:8} {case:8} {verdict:5} {detail.strip()[:100]}", file=sys.stderr)
    print("| sender | receiver | case | verdict | detail |")
    print("|---|---|---|---|---|")
    for s, r, c, v, d, t in rows:
        print(f"| {s} | {r} | {c} | {v} | {d[:140]} ({t:.1f} s) |")
    fails = sum(1 for row in rows if row[3] == "FAIL")
    print(f"\n{len(rows)} cells: {sum(1 for row in rows if row[3] == 'PASS')} pass, "
          f"{sum(1 for row in rows if row[3] == 'n/a')} n/a, {fails} fail")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
