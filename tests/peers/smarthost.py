"""A scripted smarthost on aiosmtpd for the CPM -> e-mail peer tests.
Usage: /usr/bin/python3 smarthost.py PORT DIR MODE [CERT KEY]  (127.0.0.1:PORT until killed)

MODE: ok (250, keeps every mail as DIR/<n>.eml), slow (250 after 2.5 s), 451 (DATA 451
4.3.0), 452 (RCPT 452 4.2.2 mailbox full), 550 (RCPT 550 5.1.1 no such user), 552 (DATA 552
5.3.4), 554 (DATA 554 5.7.1), silent (never answers DATA). With CERT and KEY it offers
STARTTLS and refuses mail without it (require_starttls); kept mails record X-Session-TLS.
"""

import asyncio
import os
import sys
import time

from aiosmtpd.controller import Controller


class Scripted:
    def __init__(self, directory, mode):
        self.directory = directory
        self.mode = mode
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "452":
            return "452 4.2.2 mailbox full"
        if self.mode == "550":
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "silent":
            await asyncio.sleep(3600)
        if self.mode == "451":
            return "451 4.3.0 try again later"
        if self.mode == "552":
            return "552 5.3.4 message too big"
        if self.mode == "554":
            return "554 5.7.1 rejected by policy"
        if self.mode == "slow":
            await asyncio.sleep(2.5)
        self.count += 1
        tmp = os.path.join(self.directory, ".%d.tmp" % self.count)
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-From: <%s>\r\n" % envelope.mail_from.strip("<>").encode())
            f.write(b"X-Envelope-To: %s\r\n" % ",".join(envelope.rcpt_tos).encode())
            f.write(b"X-Mail-Options: %s\r\n" % " ".join(envelope.mail_options).encode())
            f.write(b"X-Session-TLS: %s\r\n" % (b"yes" if session.ssl else b"no"))
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, "%d.eml" % self.count))
        return "250 2.0.0 kept"


def main():
    port, directory, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    tls = {}
    if len(sys.argv) > 5:
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
        tls = {"tls_context": ctx, "require_starttls": True}
    controller = Controller(
        Scripted(directory, mode), hostname="127.0.0.1", port=port, decode_data=False, **tls
    )
    controller.start()
    print("smarthost (%s) listening on 127.0.0.1:%d" % (mode, port), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
