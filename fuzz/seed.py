#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/<target>/ from the repository's fixtures,
rules and a few hand-written protocol samples. Seeds are named seed-*; libFuzzer adds its
own (hash-named) inputs next to them when a run finds new coverage.
Run from the repository root: python3 fuzz/seed.py"""
import hashlib, pathlib, re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def mails(limit=8192):
    for p in sorted((ROOT / "tests" / "fixtures").rglob("*.eml")):
        if p.stat().st_size < limit:
            raw = p.read_bytes()
            # the fixtures may use LF line ends; the wire uses CRLF
            raw = re.sub(rb"\r?\n", b"\r\n", raw)
            yield p.stem, raw


# smtp_framing: first byte = read size; then a whole session.
HELLO = b"EHLO client.example\r\nMAIL FROM:<a@mail.example.org> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<+15551234567@cpm.example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y\r\nDATA\r\n"
ENDS = [b"\n.\n", b"\n.\r", b"\r.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r\r\n",
        b"\r\r\n.\r\r\n", b"\r\n\x00.\r\n", b"\r\n.\n", b"\r\n..\r\n"]
SMUGGLED = b"MAIL FROM:<s@evil.example>\r\nRCPT TO:<alice@cpm.example.net>\r\nDATA\r\nSpoofed\r\n.\r\n"
for i, end in enumerate(ENDS):
    put("smtp_framing", f"smuggle-{i:02}", bytes([i * 3]) + HELLO + b"hello" + end + SMUGGLED + b"QUIT\r\n")
put("smtp_framing", "plain", b"\x1f" + HELLO + b"Subject: x\r\n\r\n..stuffed\r\n.\r\nQUIT\r\n")
put("smtp_framing", "empty-data", b"\x00" + HELLO + b".\r\nRSET\r\nNOOP\r\n")
put("smtp_framing", "params", b"\x07EHLO x\r\nMAIL FROM:<a@b> SIZE=999999999999999999999 BY=-99999999999999999999;R ENVID=" + b"e" * 120 + b"\r\nMAIL FROM:<\"x> y\"@b> BY=60;RT SIZE=1 SIZE=2\r\nRCPT TO:<c@d> NOTIFY=NEVER NOTIFY=SUCCESS ORCPT=rfc822;" + b"o" * 510 + b"\r\n")
put("smtp_framing", "bare", b"\x02HELO x\nMAIL FROM:<a@b>\r\rRCPT TO:<c@d>\r\nDATA\r\n" + b"x" * 1100 + b"\r\n.\r\n")
put("smtp_framing", "bdat", b"\x10EHLO x\r\nBDAT 30 LAST\r\nMAIL FROM:<x@y>\r\nDATA\r\nQUIT\r\n")
put("smtp_framing", "long", b"\x05" + b"NOOP " + b"a" * 3000 + b"\r\nDATA\r\n.\r\n")

# dsl: first byte = mode (byte % 4) and phase ((byte / 4) % phases).
PHASES = ["address", "recipient", "message", "response", "transaction"]
texts = []
for p in sorted((ROOT / "rules").glob("*.yaml")):
    if p.name == "settings.yaml":
        continue
    raw = p.read_bytes()
    m = re.search(rb"^phase:\s*(\w+)", raw, re.M)
    phase = PHASES.index(m.group(1).decode()) if m and m.group(1).decode() in PHASES else 0
    put("dsl", f"file-{p.stem}", bytes([2]) + raw)
    for j, w in enumerate(re.findall(rb"^\s*when:\s*(.+)$", raw, re.M)):
        put("dsl", f"when-{p.stem}-{j:02}", bytes([phase * 4]) + w.strip() + b"\x00+15551234567")
    for j, t in enumerate(re.findall(rb"^\s*(?:uri|reply|reject|text|body):\s*(.+)$", raw, re.M)):
        put("dsl", f"tpl-{p.stem}-{j:02}", bytes([phase * 4 + 1]) + t.strip().strip(b"\"'"))
for name, raw in list(mails(4096))[:20]:
    put("dsl", f"mail-{name}", b"\x03" + raw)

# map: first byte odd = a fixed accepted recipient, even = the mail's own To/Cc.
for name, raw in mails():
    put("map", f"{name}", b"\x01" + raw)
    if hashlib.sha1(raw).digest()[0] % 4 == 0:
        put("map", f"{name}-own", b"\x00" + raw)

# sip_response: first byte = read size for the stream framing.
VIA = b"Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK1\r\nFrom: <sip:iwf@iwf.example.net>;tag=1\r\nTo: <tel:+15551234567>;tag=2\r\nCall-ID: 1@iwf.example.net\r\nCSeq: 1 MESSAGE\r\n"
RESP = {
    "200": b"SIP/2.0 200 OK\r\n" + VIA + b"Content-Length: 0\r\n\r\n",
    "202-body": b"SIP/2.0 202 Accepted\r\n" + VIA + b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "302": b"SIP/2.0 302 Moved\r\n" + VIA + b"Contact: <sip:a@b.example>;q=0.5, <tel:+1555>;q=0.9, \"x\" <sips:c@d>\r\nContact: <mailto:x@y>\r\nContent-Length: 0\r\n\r\n",
    "503": b"SIP/2.0 503 Service Unavailable\r\n" + VIA + b"Retry-After: 120 (" + b"c" * 300 + b")\r\nContent-Length: 0\r\n\r\n",
    "huge-cl": b"SIP/2.0 200 OK\r\n" + VIA + b"Content-Length: 100000000000000000000\r\n\r\n",
    "code-2000": b"SIP/2.0 2000 OK\r\n" + VIA + b"Content-Length: 0\r\n\r\n",
    "413": b"SIP/2.0 413 Request Entity Too Large\r\n" + VIA + b"Warning: 399 x \"\x01\x02\"\r\nl: 0\r\n\r\n",
    "two": b"SIP/2.0 100 Trying\r\n" + VIA + b"Content-Length: 0\r\n\r\nSIP/2.0 486 Busy Here\r\n" + VIA + b"Content-Length: 0\r\n\r\n",
    "keepalive": b"\r\n\r\nSIP/2.0 480 Temporarily Unavailable\r\n" + VIA + b"\r\n",
}
for i, (name, raw) in enumerate(RESP.items()):
    put("sip_response", name, bytes([i * 7]) + raw)

# imdn_parse: IMDN documents (RFC 5438 §7.2.1.1), valid ones of every kind and status, and
# the hostile shapes the parser refuses (DOCTYPE/entities, wrong namespace, nesting).
NOTE = {"delivery": ["delivered", "failed", "forbidden", "error"],
        "display": ["displayed", "forbidden", "error"],
        "processing": ["processed", "stored", "forbidden", "error"]}
for kind, statuses in NOTE.items():
    for st in statuses:
        put("imdn_parse", f"{kind}-{st}", (
            '<?xml version="1.0" encoding="UTF-8"?>\n<imdn xmlns="urn:ietf:params:xml:ns:imdn">\n'
            '  <message-id>Zq81mK0pR2</message-id>\n  <datetime>2025-11-21T14:03:07Z</datetime>\n'
            '  <recipient-uri>sip:alice%40mail.example.org@iwf.example.net</recipient-uri>\n'
            '  <original-recipient-uri>sip:alice%40mail.example.org@iwf.example.net</original-recipient-uri>\n'
            f'  <subject>hi &amp; &#x263A;</subject>\n  <{kind}-notification><status><{st}/></status></{kind}-notification>\n</imdn>\n').encode())
put("imdn_parse", "prefixed", b'<i:imdn xmlns:i="urn:ietf:params:xml:ns:imdn" xmlns:x="urn:x"><x:e><i:message-id>n</i:message-id></x:e><i:message-id><![CDATA[a<b]]></i:message-id><i:datetime>d</i:datetime><i:display-notification><i:status><i:displayed/><x:r/></i:status></i:display-notification></i:imdn>')
put("imdn_parse", "lolz", b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&lol2;</message-id></imdn>')
put("imdn_parse", "xxe", b'<!DOCTYPE imdn [<!ENTITY x SYSTEM "file:///etc/passwd">]><imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&x;</message-id></imdn>')
put("imdn_parse", "deep", b'<imdn xmlns="urn:ietf:params:xml:ns:imdn">' + b"<a>" * 20 + b"</a>" * 20 + b"</imdn>")

# mail_report_parse: the DSN / MDN fixtures (Postfix, Exim, MMS, RFC examples, MDNs).
for p in sorted((ROOT / "tests" / "fixtures" / "reports").glob("*.eml")):
    put("mail_report_parse", p.stem, p.read_bytes())
