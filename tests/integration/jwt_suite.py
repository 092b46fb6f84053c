"""What the JWT suites (test_jwt.py, test_jwt_overlay.py, test_handshake.py)
share: Clerk's stand-ins on sys.path (tests/clerk), the issuer and party
they configure, a JWT location, the redaction of tokens in failure messages,
and the key fixtures. Not a test module itself.

The suites import the fixtures here by name (`from jwt_suite import keys`):
pytest finds a fixture in the test module's namespace, so each suite gets
its own module-scoped instances.

PYTEST_DONT_REWRITE: as for the suites, no assertion here may print a
token; every one carries its own message, with tokens replaced by their
digest (tokens.redact)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clerk"))

import tokens as T  # noqa: E402

import harness  # noqa: E402
from harness import redis_directive  # noqa: E402

ISS = "https://clerk.example.test"
AZP = "https://app.example.test"


@pytest.fixture(scope="module", autouse=True)
def _redacted_responses():
    """A response's repr (in messages and in a traceback's arguments) hides
    tokens: the echo upstream's body carries the request's cookies."""
    with pytest.MonkeyPatch.context() as mp:
        plain = harness.Response.__repr__
        mp.setattr(harness.Response, "__repr__", lambda self: T.redact(plain(self)))
        yield


def key_fixture(kid):
    """A module-scoped `key` fixture: a signing key whose JWK has `kid`."""
    @pytest.fixture(scope="module")
    def key():
        return T.SigningKey(kid=kid)
    return key


@pytest.fixture
def keys(tmp_path, key):
    """The path of a JWKS file holding `key`."""
    return write(tmp_path, "jwks.json", T.jwks(key))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def expect(resp, status, *context):
    """resp.status == status, or a failure that shows the response with every
    token replaced by its digest (the suites are not assertion-rewritten)."""
    assert resp.status == status, T.redact((context, resp) if context else resp)
    return resp


def location(path, keys, directives="", parties=AZP, issuer=ISS, headers=harness.SESSION_HEADERS):
    """A JWT location proxied to the echo upstream. `parties` is left out
    when empty, or when `directives` names the authorized parties itself."""
    if "session_jwt_authorized_parties" in directives:
        parties = ""
    return """
        location %s {
            session_check on;
            session_jwt_keys %s;
            session_jwt_issuer %s;
            %s
            %s
            %s
            proxy_pass http://app;
        }""" % (path, keys, issuer, "session_jwt_authorized_parties %s;" % parties if parties else "",
                directives, headers)


def start(nginx, address, keys, locations=(("/app/", ""),), redis_params="timeout=1s connect_timeout=1s",
          http="", headers=harness.SESSION_HEADERS, **kw):
    """nginx with Redis at `address` and one JWT location per (path,
    directives) of `locations`."""
    return nginx(http=redis_directive(address, redis_params) + http,
                 server="".join(location(p, keys, d, headers=headers) for p, d in locations), **kw)


def claims(sub="user_1", sid="sess_1", azp=AZP, **extra):
    return T.session_claims(sub, sid, ISS, azp=azp, **extra)


def tok(key, sub="user_1", sid="sess_1", **extra):
    return key.mint(claims(sub, sid, **extra))


def session_cookie(token):
    return {"Cookie": "__session=%s" % token}


def assert_not_logged(n, token):
    """Neither the token nor a long piece of it is in nginx's error log."""
    if harness.LOG_LEVEL == "debug":  # nginx's own debug log prints the request headers
        return
    log = n.log()
    for piece in [token] + [p for p in token.split(".")[1:] if len(p) >= 16]:
        leaked = piece in log  # never let pytest print the token or the log
        assert not leaked, "a token (%s) reached the error log" % T.digest(token)
