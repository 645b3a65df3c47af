"""Samples a process's memory every half millisecond until it exits or is killed:
one line per change, `seconds VmRSS RssAnon RssFile VmHWM` (kB). Used by
bench/large_mode.sh with RSS_TRACE=FILE to show when the peak happens.
    python3 bench/large/rss_trace.py PID FILE
"""
import re
import sys
import time

pid, path = sys.argv[1], sys.argv[2]
FIELDS = re.compile(r"^(VmRSS|RssAnon|RssFile|VmHWM):\s+(\d+)", re.M)
with open(path, "w") as out:
    out.write("# seconds VmRSS RssAnon RssFile VmHWM (kB)\n")
    t0 = time.monotonic()
    last = None
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            break
        v = dict(FIELDS.findall(status))
        row = tuple(v.get(k) for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"))
        if row != last:
            out.write(f"{time.monotonic() - t0:.4f} {' '.join(map(str, row))}\n")
            out.flush()
            last = row
        time.sleep(0.0005)
