#!/usr/bin/env python3
"""SMTP probes for the whole-system benchmark (standard library only).

  latency  open-loop load at a fixed rate; measures, per mail, the time from the end of
           DATA (the write of "<CRLF>.<CRLF>") to the reply to DATA.
  idle     opens N connections that each read the banner and send EHLO, then hold them
           and read a process's VmRSS from /proc.

Both print one JSON object on stdout.

latency: a dispatcher releases mail i at start + i/rate (open loop: the schedule does not
wait for replies). C worker connections, opened and EHLO'd beforehand, take released mails
from a queue; a mail released while every connection is busy waits in the queue, and that
wait is reported apart (`queue_*`), so an overloaded server shows up as queueing instead of
silently lowering the offered rate. Per mail: MAIL FROM, RCPT TO and DATA are pipelined
when the server advertises PIPELINING (one write, three replies), then the 1 KB message
and the final dot; the clock starts right after that write and stops when the reply line
has been read.
"""
import argparse
import asyncio
import json
import os
import resource
import sys
import time


def make_message(size, n):
    """A message of about `size` bytes (headers + body), CRLF lines, like smtp-source -l."""
    head = (
        "From: <a@mail.example.org>\r\n"
        "To: <+15551230001@cpm.example.net>\r\n"
        "Date: Sun, 22 Nov 2026 00:00:00 +0000\r\n"
        f"Message-Id: <probe.{os.getpid()}.{n}@bench.example.org>\r\n"
        "Subject: latency probe\r\n\r\n"
    )
    body = []
    left = max(size, 1)
    i = 0
    while left > 0:
        line = (str(i % 10) + "X" * 78)[: min(79, left)]
        body.append(line)
        left -= len(line) + 2
        i += 1
    return (head + "\r\n".join(body) + "\r\n.\r\n").encode()


async def read_reply(reader):
    """One SMTP reply (possibly multi-line); returns (code, text)."""
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed by server")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            break
    return int(lines[-1][:3]), b"".join(lines)


async def open_session(host, port, helo="bench.example.org"):
    reader, writer = await asyncio.open_connection(host, port)
    code, text = await read_reply(reader)
    if code != 220:
        raise ConnectionError(f"banner {text!r}")
    writer.write(f"EHLO {helo}\r\n".encode())
    code, text = await read_reply(reader)
    if code != 250:
        raise ConnectionError(f"EHLO {text!r}")
    return reader, writer, b"PIPELINING" in text.upper()


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def latency(a):
    host, port = a.server.rsplit(":", 1)
    port = int(port)
    mail_from = f"MAIL FROM:<{a.mail_from}>\r\n".encode()
    rcpt_to = f"RCPT TO:<{a.rcpt}>\r\n".encode()
    total = int(a.rate * a.duration)
    warmup = int(a.rate * a.warmup)
    queue = asyncio.Queue()
    data_lat = []  # end of DATA -> reply, seconds (measured mails only)
    queue_lat = []  # release -> worker start
    errors = []
    done = 0

    sessions = await asyncio.gather(*(open_session(host, port) for _ in range(a.connections)))

    async def worker(reader, writer, pipelining):
        nonlocal done
        n = 0
        while True:
            item = await queue.get()
            if item is None:
                break
            idx, released = item
            started = time.perf_counter()
            n += 1
            msg = make_message(a.size, f"{id(writer)}.{n}")
            try:
                if pipelining:
                    writer.write(mail_from + rcpt_to + b"DATA\r\n")
                    codes = [(await read_reply(reader))[0] for _ in range(3)]
                else:
                    codes = []
                    for cmd in (mail_from, rcpt_to, b"DATA\r\n"):
                        writer.write(cmd)
                        codes.append((await read_reply(reader))[0])
                if codes != [250, 250, 354]:
                    errors.append(f"envelope {codes}")
                    if codes[2] == 354:
                        writer.write(b".\r\n")
                        await read_reply(reader)
                    continue
                writer.write(msg)
                t0 = time.perf_counter()
                code, text = await read_reply(reader)
                t1 = time.perf_counter()
                if code != 250:
                    errors.append(text.decode(errors="replace").strip())
                elif idx >= warmup:
                    data_lat.append(t1 - t0)
                    queue_lat.append(started - released)
                done += 1
            except (ConnectionError, OSError) as e:
                errors.append(f"connection: {e}")
                return

    workers = [asyncio.ensure_future(worker(*s)) for s in sessions]
    start = time.perf_counter()
    i = 0
    while i < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * a.rate) + 1)
        while i < due:
            queue.put_nowait((i, start + i / a.rate))
            i += 1
        await asyncio.sleep(max(0.0, start + i / a.rate - time.perf_counter()))
    released_end = time.perf_counter()
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    end = time.perf_counter()
    for _, w, _ in sessions:
        try:
            w.write(b"QUIT\r\n")
            w.close()
        except Exception:
            pass
    data_lat.sort()
    queue_lat.sort()
    ms = lambda v: None if v is None else round(v * 1000, 3)
    out = {
        "server": a.server,
        "offered_rate": a.rate,
        "connections": a.connections,
        "mails": total,
        "measured": len(data_lat),
        "ok": done,
        "errors": len(errors),
        "first_errors": errors[:3],
        "achieved_rate": round(done / (end - start), 1),
        "release_seconds": round(released_end - start, 3),
        "p50_ms": ms(pct(data_lat, 50)),
        "p90_ms": ms(pct(data_lat, 90)),
        "p99_ms": ms(pct(data_lat, 99)),
        "max_ms": ms(data_lat[-1] if data_lat else None),
        "queue_p50_ms": ms(pct(queue_lat, 50)),
        "queue_p99_ms": ms(pct(queue_lat, 99)),
    }
    print(json.dumps(out))


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


async def idle(a):
    host, port = a.server.rsplit(":", 1)
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    before = vm_rss_kib(a.pid)
    sem = asyncio.Semaphore(a.parallel)
    errors = []

    async def one():
        async with sem:
            try:
                return await open_session(host, port)
            except (ConnectionError, OSError) as e:
                errors.append(str(e))
                return None

    t0 = time.perf_counter()
    sessions = [s for s in await asyncio.gather(*(one() for _ in range(a.count))) if s]
    opened = time.perf_counter() - t0
    await asyncio.sleep(a.settle)
    during = vm_rss_kib(a.pid)
    # The connections still answer after the wait: NOOP on a few of them.
    alive = 0
    for r, w, _ in sessions[:: max(1, len(sessions) // 20)]:
        w.write(b"NOOP\r\n")
        code, _ = await read_reply(r)
        alive += code == 250
    for _, w, _ in sessions:
        w.write(b"QUIT\r\n")
        w.close()
    await asyncio.sleep(a.settle)
    after = vm_rss_kib(a.pid)
    print(json.dumps({
        "server": a.server,
        "pid": a.pid,
        "connections": len(sessions),
        "errors": len(errors),
        "first_errors": errors[:3],
        "open_seconds": round(opened, 3),
        "noop_ok": alive,
        "rss_before_kib": before,
        "rss_idle_kib": during,
        "rss_after_close_kib": after,
        "per_connection_kib": round((during - before) / max(1, len(sessions)), 2),
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    la = sub.add_parser("latency")
    la.add_argument("--server", required=True, help="HOST:PORT")
    la.add_argument("--rate", type=float, required=True, help="mails per second offered")
    la.add_argument("--duration", type=float, default=10.0, help="seconds of releases")
    la.add_argument("--warmup", type=float, default=1.0, help="seconds not measured at the start")
    la.add_argument("--connections", type=int, default=64)
    la.add_argument("--size", type=int, default=1024, help="body bytes")
    la.add_argument("--mail-from", default="a@mail.example.org")
    la.add_argument("--rcpt", default="+15551230001@cpm.example.net")
    ia = sub.add_parser("idle")
    ia.add_argument("--server", required=True)
    ia.add_argument("--pid", type=int, required=True, help="process whose VmRSS is read")
    ia.add_argument("--count", type=int, default=1000)
    ia.add_argument("--parallel", type=int, default=50, help="connections opened at once")
    ia.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    a = ap.parse_args()
    asyncio.run(latency(a) if a.cmd == "latency" else idle(a))


if __name__ == "__main__":
    main()
