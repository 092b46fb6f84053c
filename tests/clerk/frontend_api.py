"""A stand-in for Clerk's Frontend API, enough for the handshake:

  GET /v1/client/handshake?redirect_url=...  records the request and answers
      307 back to redirect_url with the handshake result: in "query" mode
      (Clerk's development instances) as the query parameter
      __clerk_handshake=<token>; in "cookie" mode (production) as
      `Set-Cookie: __clerk_handshake=<token>; Path=/`.
  GET /.well-known/jwks.json                  the instance key, as a JWKS.

The handshake token is signed by the instance key and its claim `handshake`
holds Set-Cookie directives: a fresh __session token, __client_uat and the
removal of __clerk_handshake (signed in), or the removal of __session and
__client_uat=0 (signed out).

In a test: FrontendAPI(issuer=...) runs in a thread on a loopback port chosen
at run time. As a script (for the demo):
  python3 tests/clerk/frontend_api.py --port 8787 --key-file /tmp/fapi.pem \
      --sub user_demo --sid sess_demo [--jwks-out /tmp/fapi.jwks.json]
Nothing here logs a token or a key.
"""

import argparse
import http.server
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tokens  # noqa: E402

CLIENT_UAT_MAX_AGE = 315360000  # ten years, as Clerk sets it


def add_query_param(url, name, value):
    parts = urllib.parse.urlsplit(url)
    extra = "%s=%s" % (name, urllib.parse.quote(value, safe=""))
    query = parts.query + "&" + extra if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


def origin_of(url):
    parts = urllib.parse.urlsplit(url)
    return "%s://%s" % (parts.scheme, parts.netloc) if parts.scheme and parts.netloc else None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's name
        fapi = self.server.fapi
        parts = urllib.parse.urlsplit(self.path)
        if parts.path == "/v1/client/handshake":
            pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            fapi._record({"path": parts.path, "query": dict(pairs), "pairs": pairs,
                          "cookie": self.headers.get("Cookie")})
            redirect_url = dict(pairs).get("redirect_url")
            if not redirect_url:
                return self._send(400, b"missing redirect_url\n")
            token = fapi.handshake_token(redirect_url)
            headers = [("Cache-Control", "no-store")]
            if fapi.mode == "cookie":
                headers.append(("Set-Cookie", "__clerk_handshake=%s; Path=/" % token))
                headers.append(("Location", redirect_url))
            else:
                headers.append(("Location", add_query_param(redirect_url, "__clerk_handshake", token)))
            return self._send(307, b"", headers)
        if parts.path == "/.well-known/jwks.json":
            body = tokens.jwks(fapi.key).encode()
            return self._send(200, body, [("Content-Type", "application/json")])
        return self._send(404, b"not found\n")

    def _send(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        # the request line carries tokens (redirect_url, __session): log the
        # path only, and only in script mode
        if self.server.fapi.verbose:
            sys.stderr.write("frontend-api: %s %s\n" % (self.command, urllib.parse.urlsplit(self.path).path))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FrontendAPI:
    """The stand-in. Attributes a test may change between requests:
    mode ("query" or "cookie"), signer (the key that signs handshake tokens;
    another key for a refusal test), handshake_header (header overrides of
    the handshake token, e.g. {"cat": tokens.TEMPLATE_CATEGORY}),
    extra_directives (appended to the handshake, e.g. a hostile
    "sessionid=evil; Path=/"), azp (the session token's azp; default the
    origin of redirect_url)."""

    def __init__(self, key=None, issuer=None, mode="query", port=0, host="127.0.0.1", verbose=False):
        self.key = key or tokens.SigningKey()
        self.signer = self.key
        self.mode = mode
        self.verbose = verbose
        self.handshake_header = None
        self.extra_directives = []
        self.azp = None
        self.requests = []
        self._lock = threading.Lock()
        self._state = None
        self.signed_out()
        self.httpd = _Server((host, port), _Handler)
        self.httpd.fapi = self
        self.port = self.httpd.server_address[1]
        self.url = "http://%s:%d" % (host, self.port)
        self.issuer = issuer or self.url
        self.last_session_token = None
        self.last_handshake_token = None
        self.last_directives = []
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    # state -------------------------------------------------------------

    def signed_in(self, sub, sid, lifetime=60, client_uat=None, **claims):
        """The client is signed in: each handshake mints a fresh session token
        for sub/sid (with these extra claims) and sets __client_uat to the
        sign-in time (now, or `client_uat`)."""
        with self._lock:
            self._state = {"sub": sub, "sid": sid, "lifetime": lifetime, "claims": claims,
                           "client_uat": int(time.time()) if client_uat is None else int(client_uat)}

    def signed_out(self):
        with self._lock:
            self._state = None

    def hostile(self, directive="sessionid=evil; Path=/"):
        """Adds a directive no Clerk handshake sets."""
        self.extra_directives.append(directive)

    # handshake ---------------------------------------------------------

    def directives(self, redirect_url=None):
        with self._lock:
            state = dict(self._state) if self._state else None
        if state:
            claims = tokens.session_claims(state["sub"], state["sid"], self.issuer,
                                           azp=self.azp or (redirect_url and origin_of(redirect_url)),
                                           lifetime=state["lifetime"], **state["claims"])
            session = self.key.mint(claims)
            self.last_session_token = session
            out = ["__session=%s; Path=/; SameSite=Lax" % session,
                   "__client_uat=%d; Path=/; Max-Age=%d; SameSite=Lax" % (state["client_uat"],
                                                                          CLIENT_UAT_MAX_AGE)]
        else:
            self.last_session_token = None
            out = ["__session=; Path=/; Max-Age=0; SameSite=Lax",
                   "__client_uat=0; Path=/; Max-Age=%d; SameSite=Lax" % CLIENT_UAT_MAX_AGE]
        out.append("__clerk_handshake=; Path=/; Max-Age=0")
        return out + list(self.extra_directives)

    def handshake_token(self, redirect_url=None):
        self.last_directives = self.directives(redirect_url)
        token = tokens.handshake_token(self.signer, self.last_directives, header=self.handshake_header)
        self.last_handshake_token = token
        return token

    # bookkeeping -------------------------------------------------------

    def _record(self, entry):
        with self._lock:
            self.requests.append(entry)

    def handshakes(self):
        with self._lock:
            return list(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _load_or_create_key(path, kid):
    if os.path.exists(path):
        with open(path) as f:
            return tokens.SigningKey.from_pem(f.read(), kid=kid)
    key = tokens.SigningKey(kid=kid)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.private_pem())
    return key


def main(argv=None):
    ap = argparse.ArgumentParser(description="A stand-in for Clerk's Frontend API (handshake, JWKS).")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--key-file", required=True,
                    help="the instance's private key (PEM); created (mode 0600) when missing")
    ap.add_argument("--kid", default="ins_demo_1")
    ap.add_argument("--issuer", help="iss of the tokens (default: this server's URL)")
    ap.add_argument("--mode", choices=("query", "cookie"), default="query")
    ap.add_argument("--sub", default="user_demo")
    ap.add_argument("--sid", default="sess_demo")
    ap.add_argument("--signed-out", action="store_true")
    ap.add_argument("--jwks-out", help="write the public JWKS to this file")
    ap.add_argument("--public-key-out", help="write the public key (PEM) to this file")
    args = ap.parse_args(argv)

    key = _load_or_create_key(args.key_file, args.kid)
    fapi = FrontendAPI(key=key, issuer=args.issuer, mode=args.mode, port=args.port,
                       host=args.host, verbose=True)
    if not args.signed_out:
        fapi.signed_in(args.sub, args.sid)
    if args.jwks_out:
        with open(args.jwks_out, "w") as f:
            f.write(tokens.jwks(key))
    if args.public_key_out:
        with open(args.public_key_out, "w") as f:
            f.write(key.public_pem())
    print("frontend api on %s (issuer %s, %s)" % (fapi.url, fapi.issuer,
                                                  "signed out" if args.signed_out else
                                                  "signed in as %s" % args.sub), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fapi.close()


if __name__ == "__main__":
    main()
