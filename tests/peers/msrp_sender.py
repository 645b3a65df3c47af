#!/usr/bin/env python3
"""A plain MSRP sender (stdlib only), adapted from the project's shared bench-baseline
sip_msrp_flow.py: it is not iwf's own client, so it checks the Large Message Mode receiving
side against an independent implementation of RFC 4975.

INVITE (SDP offer m=message TCP/MSRP, a=setup:active) -> 200 (SDP answer a=path) -> ACK ->
MSRP SEND chunks on one TCP connection to the answered path, stop-and-wait (200 per chunk;
the last chunk's 200 comes only after iwf's smarthost said 250) -> BYE -> 200.

  msrp_sender.py --peer 127.0.0.1:5062 --uri sip:alice%40mail.example.org@iwf.example.net \
                 --file CONTENT --ctype message/cpim --chunk 10000

Prints one line per step; exits 0 only when INVITE, every chunk and BYE got 200.
"""
import argparse
import os
import re
import socket
import sys


def sip_request(sock, peer, method, uri, call_id, cseq, ftag, ttag, body=b"", ctype=None):
    lip, lport = sock.getsockname()
    branch = "z9hG4bK" + os.urandom(6).hex()
    hdrs = [f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {lip}:{lport};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:+15551234567@{lip}>;tag={ftag}",
            f"To: <{uri}>" + (f";tag={ttag}" if ttag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {'INVITE' if method == 'ACK' else method}",
            f"Contact: <sip:+15551234567@{lip}:{lport}>"]
    if ctype:
        hdrs.append(f"Content-Type: {ctype}")
    hdrs.append(f"Content-Length: {len(body)}")
    sock.sendto(("\r\n".join(hdrs) + "\r\n\r\n").encode() + body, peer)
    if method == "ACK":
        return None
    while True:  # no retransmission: loopback only, fail loudly on loss
        data, _ = sock.recvfrom(65535)
        code = int(data[8:11])
        if code >= 200:
            return data


def msrp_send(ms, to_path, from_path, payload, ctype, chunk):
    msg_id = os.urandom(4).hex()
    buf = b""
    for off in range(0, len(payload), chunk):
        part = payload[off:off + chunk]
        tid = os.urandom(6).hex()
        last = off + len(part) >= len(payload)
        ms.sendall((f"MSRP {tid} SEND\r\nTo-Path: {to_path}\r\nFrom-Path: {from_path}\r\n"
                    f"Message-ID: {msg_id}\r\nByte-Range: {off + 1}-{off + len(part)}/{len(payload)}\r\n"
                    f"Content-Type: {ctype}\r\n\r\n").encode() + part +
                   f"\r\n-------{tid}{'$' if last else '+'}\r\n".encode())
        end = f"-------{tid}$\r\n".encode()
        while end not in buf:
            d = ms.recv(65536)
            if not d:
                raise ConnectionError("MSRP peer closed")
            buf += d
        frame, buf = buf.split(end, 1)
        # the transaction response is the frame that starts with our tid
        frame = frame[frame.rfind(f"MSRP {tid} ".encode()):]
        status = frame.split(b"\r\n", 1)[0].split(b" ")[2]
        if status != b"200":
            raise RuntimeError(f"MSRP chunk at {off + 1} answered {status!r}")
    return -(-len(payload) // chunk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--ctype", default="message/cpim")
    ap.add_argument("--chunk", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    h, p = a.peer.rsplit(":", 1)
    peer = (h, int(p))
    payload = open(a.file, "rb").read()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(a.timeout)
    s.bind(("127.0.0.1", 0))
    lip, lport = s.getsockname()
    call_id, ftag = os.urandom(8).hex() + "@127.0.0.1", os.urandom(4).hex()
    # Our own MSRP URI (we are the active party: we connect, RFC 4975 a=setup:active)
    my_path = f"msrp://127.0.0.1:{lport}/{os.urandom(6).hex()};tcp"
    sdp = (f"v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=message {lport} TCP/MSRP *\r\na=sendonly\r\na=accept-types:message/cpim text/plain\r\n"
           f"a=setup:active\r\na=path:{my_path}\r\n").encode()
    r = sip_request(s, peer, "INVITE", a.uri, call_id, 1, ftag, None, sdp, "application/sdp")
    print("INVITE ->", r.split(b"\r\n", 1)[0].decode(), flush=True)
    if not r.startswith(b"SIP/2.0 200"):
        sys.exit(1)
    ttag = re.search(rb"\r\nTo:[^\r\n]*;tag=([^;\r\n]+)", r, re.I).group(1).decode()
    path = re.search(rb"a=path:(\S+)", r).group(1).decode()
    sip_request(s, peer, "ACK", a.uri, call_id, 1, ftag, ttag)
    mhost, mport = re.match(r"msrp://([^:/]+):(\d+)/", path).groups()
    ms = socket.create_connection((mhost, int(mport)), timeout=a.timeout)
    ms.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    n = msrp_send(ms, path, my_path, payload, a.ctype, a.chunk)
    print(f"MSRP   -> {len(payload)} bytes in {n} chunks to {path}: all 200", flush=True)
    r = sip_request(s, peer, "BYE", a.uri, call_id, 2, ftag, ttag)
    print("BYE    ->", r.split(b"\r\n", 1)[0].decode(), flush=True)
    ms.close()
    s.close()
    sys.exit(0 if r.startswith(b"SIP/2.0 200") else 1)


if __name__ == "__main__":
    main()
