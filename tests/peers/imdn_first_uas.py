"""A CPM recipient whose delivery IMDN overtakes its 200 (tests/peers/reports.rs).

Usage: python3 imdn_first_uas.py LISTEN_PORT IWF_SIP_PORT DELAY_MS

Over UDP on 127.0.0.1:LISTEN_PORT it takes one MESSAGE that asks for IMDNs and, before it
answers it, sends a `delivered` IMDN (RFC 5438 §7.2.1.1) to iwf at 127.0.0.1:IWF_SIP_PORT;
only DELAY_MS after that IMDN was answered does it answer the MESSAGE with 200 (a 2xx held
up on its way back while the IMDN took another path). Retransmissions of the MESSAGE get
nothing before that, the same 200 after. Prints one line per event; exits 20 s after start.

SIPp cannot play this part: its `[last_*]` keywords would name the IMDN's 200 by the time
the MESSAGE is answered, and the MESSAGE's UDP retransmissions arriving while it waits would
be unexpected messages to its scenario.
"""

import re
import socket
import sys
import time


def header(text, name):
    m = re.search(r"^" + re.escape(name) + r":[ \t]*(.*?)\r?$", text, re.M | re.I)
    return m.group(1) if m else None


def uri(v):
    m = re.search(r"<([^>]+)>", v or "")
    return m.group(1) if m else (v or "").split(";")[0].strip()


def main():
    port, iwf_port, delay = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.settimeout(0.05)
    print("ready", flush=True)
    end = time.time() + 20
    im = None  # (source address, the 200 to send)
    imdn = None  # (the request, when last sent) until it is answered
    answer_at = None
    answered = False
    while time.time() < end:
        now = time.time()
        if imdn and now - imdn[1] >= 0.5:  # RFC 3261 Timer E, roughly
            s.sendto(imdn[0], ("127.0.0.1", iwf_port))
            imdn = (imdn[0], now)
        if answer_at and now >= answer_at:
            s.sendto(im[1], im[0])
            print("MESSAGE answered 200", flush=True)
            answer_at, answered = None, True
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        text = data.decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        first = head.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0 "):
            code = first.split(" ")[1]
            if code.startswith("1"):
                continue
            print("IMDN answered " + code, flush=True)
            if imdn:
                imdn = None
                answer_at = time.time() + delay
            continue
        if not first.startswith("MESSAGE "):
            continue
        if im is not None:
            # a retransmission of the MESSAGE: nothing until it is answered
            if answered:
                s.sendto(im[1], addr)
            continue
        ok = "SIP/2.0 200 OK\r\n"
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            v = header(head, name) or ""
            if name == "To":
                v += ";tag=imdnfirst"
            ok += f"{name}: {v}\r\n"
        ok += "Content-Length: 0\r\n\r\n"
        im = (addr, ok.encode())
        im_id = header(body, "imdn.Message-ID")
        dt = header(body, "DateTime")
        ruri = first.split(" ")[1]
        sender = uri(header(head, "From"))
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<imdn xmlns="urn:ietf:params:xml:ns:imdn">'
            f"<message-id>{im_id}</message-id><datetime>{dt}</datetime>"
            f"<recipient-uri>{ruri}</recipient-uri>"
            "<delivery-notification><status><delivered/></status></delivery-notification>"
            "</imdn>"
        )
        cpim = (
            f"From: <{ruri}>\r\nTo: <{sender}>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
            f"imdn.Message-ID: first-{im_id}\r\nDateTime: 2025-11-21T14:03:06Z\r\n\r\n"
            "Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n"
            + xml
        )
        req = (
            f"MESSAGE {sender} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKimdnfirst{int(time.time() * 1000)}\r\n"
            f"From: <{ruri}>;tag=imdnfirst1\r\nTo: <{sender}>\r\n"
            f"Call-ID: imdn-first-{im_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
            f"Content-Type: message/cpim\r\nContent-Length: {len(cpim.encode())}\r\n\r\n" + cpim
        ).encode()
        s.sendto(req, ("127.0.0.1", iwf_port))
        imdn = (req, time.time())
        print(f"IMDN sent for {im_id} before answering the MESSAGE", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
