#!/usr/bin/env python3
"""(Copied from the shared peer baseline; the yardstick bench/large_mode.sh runs.)
End-to-end large-mail path against a real peer, stdlib only:
INVITE (SDP offer m=message TCP/MSRP) -> 200 OK (SDP answer a=path) -> ACK ->
MSRP SEND chunks on TCP to the answered path (200 per chunk) -> BYE -> 200.
Default peer: kamailio/kamailio-msrp.cfg on 127.0.0.1:5080 (SIP/UDP).
  python3 sip_msrp_flow.py --peer 127.0.0.1:5080 --size 102400 --chunk 2048 [--count 10]
Prints each step once, then sessions/s and per-session latency for --count sessions.
"""
import argparse
import os
import re
import socket
import statistics
import time


def sip_request(sock, peer, method, uri, call_id, cseq, ftag, ttag, body=b"", ctype=None):
    lip, lport = sock.getsockname()
    branch = "z9hG4bK" + os.urandom(6).hex()
    hdrs = [f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {lip}:{lport};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:gw@{lip}>;tag={ftag}",
            f"To: <{uri}>" + (f";tag={ttag}" if ttag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {'INVITE' if method == 'ACK' else method}",
            f"Contact: <sip:gw@{lip}:{lport}>"]
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


def msrp_send(ms, to_path, from_path, payload, chunk, buf):
    msg_id = os.urandom(4).hex()
    for off in range(0, len(payload), chunk):
        part = payload[off:off + chunk]
        tid = os.urandom(6).hex()
        last = off + len(part) >= len(payload)
        ms.sendall((f"MSRP {tid} SEND\r\nTo-Path: {to_path}\r\nFrom-Path: {from_path}\r\n"
                    f"Message-ID: {msg_id}\r\nByte-Range: {off + 1}-{off + len(part)}/{len(payload)}\r\n"
                    f"Content-Type: message/rfc822\r\n\r\n").encode() + part +
                   f"\r\n-------{tid}{'$' if last else '+'}\r\n".encode())
        end = f"-------{tid}$\r\n".encode()
        while end not in buf:
            d = ms.recv(65536)
            if not d:
                raise ConnectionError("MSRP peer closed")
            buf += d
        frame, buf = buf.split(end, 1)
        status = frame.split(b"\r\n", 1)[0].split(b" ")[2]
        if status != b"200":
            raise RuntimeError(f"MSRP chunk answered {status!r}")
    return buf


def session(peer, size, chunk, verbose):
    host, port = peer
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.bind(("127.0.0.1", 0))
    lip, lport = s.getsockname()
    uri = f"sip:peer@{host}:{port}"
    call_id, ftag = os.urandom(8).hex() + "@127.0.0.1", os.urandom(4).hex()
    # Our own MSRP URI (we are the active party: we connect, RFC 4975 a=setup:active)
    my_path = f"msrp://127.0.0.1:{lport}/{os.urandom(6).hex()};tcp"
    sdp = (f"v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=message {lport} TCP/MSRP *\r\na=accept-types:message/rfc822 text/plain\r\n"
           f"a=setup:active\r\na=path:{my_path}\r\n").encode()
    t0 = time.perf_counter()
    r = sip_request(s, peer, "INVITE", uri, call_id, 1, ftag, None, sdp, "application/sdp")
    if verbose:
        print("INVITE ->", r.split(b"\r\n", 1)[0].decode())
    if not r.startswith(b"SIP/2.0 200"):
        raise RuntimeError(r[:200])
    ttag = re.search(rb"\r\nTo:[^\r\n]*;tag=([^;\r\n]+)", r, re.I).group(1).decode()
    path = re.search(rb"a=path:(\S+)", r).group(1).decode()
    sip_request(s, peer, "ACK", uri, call_id, 1, ftag, ttag)
    mhost, mport = re.match(r"msrp://([^:/]+):(\d+)/", path).groups()
    ms = socket.create_connection((mhost, int(mport)), timeout=5)
    ms.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = (b"Subject: big mail\r\n\r\n" + b"z" * size)[:size]
    msrp_send(ms, path, my_path, payload, chunk, b"")
    if verbose:
        print(f"MSRP   -> {len(payload)} bytes in {-(-size // chunk)} chunks to {path}: all 200")
    ms.close()
    r = sip_request(s, peer, "BYE", uri, call_id, 2, ftag, ttag)
    if verbose:
        print("BYE    ->", r.split(b"\r\n", 1)[0].decode())
    s.close()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", default="127.0.0.1:5080")
    ap.add_argument("--size", type=int, default=102400)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--count", type=int, default=1)
    a = ap.parse_args()
    h, p = a.peer.rsplit(":", 1)
    peer = (h, int(p))
    lat = [session(peer, a.size, a.chunk, True)]
    t0 = time.perf_counter()
    for _ in range(a.count - 1):
        lat.append(session(peer, a.size, a.chunk, False))
        if time.perf_counter() - t0 > 120:
            break
    el = time.perf_counter() - t0
    n = len(lat) - 1
    ms = sorted(x * 1000 for x in lat)
    print(f"sessions={len(lat)} size={a.size} chunk={a.chunk} "
          + (f"sessions/s={n / el:.0f} " if n else "")
          + f"latency_ms p50={statistics.median(ms):.2f} max={ms[-1]:.2f}")


if __name__ == "__main__":
    main()
