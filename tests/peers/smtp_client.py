"""SMTP/LMTP client for the peer tests, on Python's smtplib (a real, independent client).

Usage: python3 smtp_client.py HOST PORT < spec.json > replies.json

spec: {"lmtp": false, "ehlo": "client.example", "timeout": 30,
       "transactions": [{"mail_from": "a@b", "mail_opts": ["BODY=8BITMIME"],
                         "rcpts": [["+1555@cpm.example.net", ["NOTIFY=NEVER"]]],
                         "data": "text, LF line ends become CRLF",
                         "data_hex": "or raw bytes, in hex"}]}
A transaction without "data" stops after RCPT (then RSET). DATA is sent only when at least
one RCPT got a 2xx, as a real client does.

Prints: {"ehlo": [code, text, ["EXT", ...]],
         "transactions": [{"mail": [code, text], "rcpts": [[code, text], ...],
                           "data": [code, text] | null, "lmtp_data": [[code, text], ...]}],
         "quit": [code, text] | null}
Every reply is what the server sent (multi-line text joined with newlines).
"""

import json
import smtplib
import sys


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    spec = json.load(sys.stdin)
    cls = smtplib.LMTP if spec.get("lmtp") else smtplib.SMTP
    s = cls(host, port, timeout=spec.get("timeout", 30))
    out = {"transactions": [], "quit": None}
    name = spec.get("ehlo", "client.example")
    code, msg = s.ehlo(name) if not spec.get("lmtp") else s.docmd("LHLO", name)
    if spec.get("lmtp"):
        s.ehlo_resp = msg
        s.does_esmtp = True
        # smtplib parses extensions in ehlo() only; do it here for LHLO
        for line in text(msg).split("\n")[1:]:
            kw = line.split(" ", 1)
            s.esmtp_features[kw[0].lower()] = kw[1] if len(kw) > 1 else ""
    out["ehlo"] = [code, text(msg), sorted(k.upper() for k in s.esmtp_features)]
    try:
        transactions(s, spec, out)
    except smtplib.SMTPServerDisconnected as e:
        out["disconnected"] = str(e)
        json.dump(out, sys.stdout)
        return
    try:
        code, msg = s.docmd("QUIT")
        out["quit"] = [code, text(msg)]
        s.close()
    except smtplib.SMTPServerDisconnected:
        pass
    json.dump(out, sys.stdout)


def transactions(s, spec, out):
    for t in spec.get("transactions", []):
        r = {"mail": None, "rcpts": [], "data": None, "lmtp_data": []}
        out["transactions"].append(r)
        code, msg = s.mail(t["mail_from"], t.get("mail_opts", []))
        r["mail"] = [code, text(msg)]
        if code // 100 != 2:
            s.rset()
            continue
        for addr, opts in t.get("rcpts", []):
            code, msg = s.rcpt(addr, opts)
            r["rcpts"].append([code, text(msg)])
        accepted = sum(1 for c, _ in r["rcpts"] if c // 100 == 2)
        if ("data" not in t and "data_hex" not in t) or accepted == 0:
            s.rset()
            continue
        if "data_hex" in t:
            body = bytes.fromhex(t["data_hex"])
        else:
            body = t["data"].replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        if spec.get("lmtp"):
            # smtplib.LMTP reads one reply after DATA; LMTP sends one per accepted recipient
            s.putcmd("data")
            code, msg = s.getreply()
            if code != 354:
                r["data"] = [code, text(msg)]
                continue
            q = smtplib.quotedata(body.decode("latin-1")).encode("latin-1")
            if not q.endswith(b"\r\n"):
                q += b"\r\n"
            s.send(q + b".\r\n")
            for _ in range(accepted):
                code, msg = s.getreply()
                r["lmtp_data"].append([code, text(msg)])
            r["data"] = r["lmtp_data"][-1]
        else:
            try:
                code, msg = s.data(body)
            except smtplib.SMTPDataError as e:  # DATA itself refused (not 354)
                code, msg = e.smtp_code, e.smtp_error
            r["data"] = [code, text(msg)]


if __name__ == "__main__":
    main()
