"""An SMTP sink on aiosmtpd that keeps every mail: the peer tests point Postfix's bounces at
it. Usage: /usr/bin/python3 sink.py PORT DIR (listens on 127.0.0.1:PORT until killed).

Each mail becomes DIR/<n>.eml (written to a temporary name, then renamed, so a reader never
sees half a file), preceded by X-Envelope-From and X-Envelope-To lines.
"""

import os
import sys
import time

from aiosmtpd.controller import Controller


class Keep:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        tmp = os.path.join(self.directory, ".%d.tmp" % self.count)
        with open(tmp, "wb") as f:
            sender = envelope.mail_from.strip("<>")  # aiosmtpd gives "<>" for the null sender
            f.write(b"X-Envelope-From: <%s>\r\n" % sender.encode())
            f.write(b"X-Envelope-To: %s\r\n" % ",".join(envelope.rcpt_tos).encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, "%d.eml" % self.count))
        return "250 2.0.0 kept"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Keep(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("sink listening on 127.0.0.1:%d" % port, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
