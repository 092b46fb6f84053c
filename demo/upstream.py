#!/usr/bin/python3
"""The demo application behind nginx: answers every request with JSON saying
who nginx says the user is (the X-User-* and X-Org-* headers it set), and serves a
stand-in sign-in page. Standard library only.

    demo/upstream.py [PORT]    (default 8081, on 127.0.0.1)
"""

import http.server
import json
import sys

IDENTITY = ["X-User-Id", "X-User-Db-Id", "X-User-Role", "X-User-Roles", "X-User-Email",
            "X-Org-Id", "X-Org-Role", "X-Org-Permissions"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-app"

    def _send(self, status, ctype, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/sign-in"):
            self._send(200, "text/html; charset=utf-8",
                       "<!doctype html><title>Sign in</title><h1>Sign in</h1>"
                       "<p>(the identity provider's sign-in page would be here)</p>\n")
            return
        user = {h: self.headers.get(h) for h in IDENTITY if self.headers.get(h) is not None}
        self._send(200, "application/json",
                   json.dumps({"app": "demo", "method": self.command, "path": self.path,
                               "identity_from_nginx": user}) + "\n")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: " + fmt % args + "\n")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8081
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
