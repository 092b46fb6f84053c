"""Clerk's handshake (session_jwt_handshake): a page navigation whose session
cookie cannot be trusted as it is goes to the Frontend API (a stand-in,
tests/clerk/frontend_api.py) and comes back with a signed handshake token,
which nginx turns into Set-Cookie headers. Only GET document loads with a
cookie-borne token take part; everything else keeps a plain 401.

PYTEST_DONT_REWRITE: pytest's assertion introspection would print the
tokens these tests send and receive; every assertion here carries its own
message, with tokens replaced by their digest (tokens.redact)."""

import time
import urllib.parse

import pytest

import jwt_suite  # puts tests/clerk on sys.path
import tokens as T
from frontend_api import FrontendAPI

import harness
from harness import redis_directive
from jwt_suite import _redacted_responses, keys  # noqa: F401: fixtures
from jwt_suite import location

HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
NAV = {"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Accept": HTML}

key = jwt_suite.key_fixture("ins_hs")


@pytest.fixture
def fapi(key):
    f = FrontendAPI(key=key)
    f.signed_in("user_hs", "sess_hs", metadata={"role": "member"})
    yield f
    f.close()


@pytest.fixture
def site(nginx, rds, keys, fapi):
    """nginx with /app/ (handshake) and /login/ (handshake + session_redirect)."""
    port = harness.free_port()

    def loc(path, extra=""):
        return location(path, keys, "session_jwt_handshake %s; %s" % (fapi.url, extra),
                        parties="http://127.0.0.1:%d" % port, issuer=fapi.issuer)
    n = nginx(port=port, http=redis_directive(rds.address()),
              server=loc("/app/") + loc("/login/", "session_redirect /sign-in;"))
    n.origin = "http://127.0.0.1:%d" % port
    return n


def session_token(key, fapi, site, **kw):
    return key.mint(T.session_claims("user_hs", "sess_hs", fapi.issuer, azp=site.origin, **kw))


def cookies(**pairs):
    return {"Cookie": "; ".join("%s=%s" % kv for kv in pairs.items())}


def expired(key, fapi, site):
    return session_token(key, fapi, site, iat=int(time.time()) - 600)


def set_cookies(resp):
    return resp.header_all("Set-Cookie")


def assert_handshake_redirect(resp, site, fapi, path):
    assert resp.status == 307, T.redact(resp)
    loc = urllib.parse.urlsplit(resp.header("Location", ""))
    assert "%s://%s" % (loc.scheme, loc.netloc) == fapi.url, T.redact(resp.headers)
    assert loc.path == "/v1/client/handshake", T.redact(resp.headers)
    q = dict(urllib.parse.parse_qsl(loc.query, keep_blank_values=True))
    assert q.get("redirect_url") == site.origin + path, T.redact(q)
    assert q.get("format") == "token", T.redact(q)
    assert q.get("__clerk_hs_reason"), T.redact(q)
    assert "no-store" in resp.header("Cache-Control", ""), T.redact(resp.headers)
    return q


def assert_clean(site, *secrets):
    if harness.LOG_LEVEL == "debug":  # nginx's own debug log prints the request headers
        return
    log = site.log()
    for s in secrets:
        if s:
            leaked = s in log  # never let pytest print the token or the log
            assert not leaked, "a token (%s) reached the error log" % T.digest(s)


def follow_to_fapi(resp, fapi):
    loc = urllib.parse.urlsplit(resp.header("Location"))
    back = harness.request(fapi.port, "%s?%s" % (loc.path, loc.query))
    assert back.status == 307, T.redact(back)
    return back


def same_url(location, site, path):
    parts = urllib.parse.urlsplit(location)
    assert parts.netloc in ("", site.origin.split("//")[1]), location
    return urllib.parse.urlunsplit(("", "", parts.path, parts.query, "")) == path


def jar(set_cookie_values):
    out = {}
    for sc in set_cookie_values:
        name, _, value = sc.split(";", 1)[0].partition("=")
        if "max-age=0" in sc.lower() or value == "":
            out.pop(name.strip(), None)
        else:
            out[name.strip()] = value
    return out


# ---------------------------------------------------------------- when nginx redirects

@pytest.mark.parametrize("nav", [NAV, {"Sec-Fetch-Dest": "iframe", "Accept": "*/*"}, {"Accept": HTML}],
                         ids=["document", "iframe", "accept-html"])
def test_expired_cookie_navigation_goes_to_the_handshake(site, fapi, key, upstream, nav):
    t = expired(key, fapi, site)
    headers = dict(nav, **cookies(__session=t, __client_uat=int(time.time()) - 900))
    resp = site.get("/app/page?x=1&y=a%20b", headers=headers)
    assert_handshake_redirect(resp, site, fapi, "/app/page?x=1&y=a%20b")
    assert [c for c in set_cookies(resp) if c.startswith("__clerk_redirect_count=1")], T.redact(resp.headers)
    assert upstream.requests == [], T.redact(upstream.requests)
    assert_clean(site, t)


def test_client_uat_without_session_cookie(site, fapi):
    resp = site.get("/app/", headers=dict(NAV, **cookies(__client_uat=int(time.time()) - 60)))
    assert_handshake_redirect(resp, site, fapi, "/app/")


@pytest.mark.parametrize("uat", [None, "0"], ids=["no-cookies", "client-uat-0"])
def test_signed_out_client_gets_no_handshake(site, uat):
    resp = site.get("/app/", headers=dict(NAV, **(cookies(__client_uat=uat) if uat else {})))
    assert resp.status == 401, T.redact(resp)
    assert resp.header("Location") is None, T.redact(resp)


def test_token_older_than_client_uat(site, fapi, key, upstream):
    now = int(time.time())
    stale = session_token(key, fapi, site, iat=now - 30)
    resp = site.get("/app/", headers=dict(NAV, **cookies(__session=stale, __client_uat=now)))
    assert_handshake_redirect(resp, site, fapi, "/app/")
    # the same token, when no newer sign-in exists, is simply valid
    resp = site.get("/app/", headers=dict(NAV, **cookies(__session=stale, __client_uat=now - 60)))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-User-Id") == "user_hs", T.redact(resp.upstream_headers("X-User-Id"))
    assert_clean(site, stale)


def test_session_cookie_without_client_uat(site, fapi, key):
    resp = site.get("/app/", headers=dict(NAV, **cookies(__session=session_token(key, fapi, site))))
    assert_handshake_redirect(resp, site, fapi, "/app/")


def test_redirect_count_increments_then_stops(site, fapi, key):
    t = expired(key, fapi, site)
    base = {"__session": t, "__client_uat": int(time.time()) - 900}
    resp = site.get("/app/", headers=dict(NAV, **cookies(__clerk_redirect_count=1, **base)))
    assert_handshake_redirect(resp, site, fapi, "/app/")
    assert [c for c in set_cookies(resp) if c.startswith("__clerk_redirect_count=2")], T.redact(resp.headers)
    resp = site.get("/app/", headers=dict(NAV, **cookies(__clerk_redirect_count=3, **base)))
    assert resp.status == 401, T.redact(resp)
    assert resp.header("Location") is None, T.redact(resp)
    resp = site.get("/login/", headers=dict(NAV, **cookies(__clerk_redirect_count=3, **base)))
    assert resp.status == 302, T.redact(resp)
    assert resp.header("Location", "").endswith("/sign-in"), T.redact(resp.headers)
    assert_clean(site, t)


@pytest.mark.parametrize("case", ["post", "bearer", "fetch", "api-accept", "bad-signature"])
def test_no_handshake_for_other_requests(site, fapi, key, case):
    t = expired(key, fapi, site)
    uat = int(time.time()) - 900
    method, headers = "GET", dict(NAV, **cookies(__session=t, __client_uat=uat))
    if case == "post":
        method = "POST"
    elif case == "bearer":
        headers = dict(NAV, Authorization="Bearer %s" % t, **cookies(__client_uat=uat))
    elif case == "fetch":
        headers = dict(headers, **{"Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"})
    elif case == "api-accept":
        headers = dict(cookies(__session=t, __client_uat=uat), Accept="application/json")
    elif case == "bad-signature":  # not a handshake case: a forgery stays a forgery
        t = T.SigningKey(kid=key.kid).mint(T.session_claims("user_hs", "sess_hs", fapi.issuer,
                                                            azp=site.origin))
        headers = dict(NAV, **cookies(__session=t, __client_uat=uat))
    resp = site.get("/app/", method=method, headers=headers, body="" if method == "POST" else None)
    assert resp.status == 401, T.redact(resp)
    assert resp.header("Location") is None, T.redact(resp)
    assert not [c for c in set_cookies(resp) if c.startswith("__clerk_redirect_count")], T.redact(resp)
    assert_clean(site, t)
    # control: the same expired cookie on a GET navigation does get one
    control = site.get("/app/", headers=dict(NAV, **cookies(__session=expired(key, fapi, site),
                                                            __client_uat=uat)))
    assert_handshake_redirect(control, site, fapi, "/app/")


def test_no_handshake_under_satisfy_any(nginx, rds, tmp_path, key, fapi):
    (tmp_path / "k.json").write_text(T.jwks(key))
    n = nginx(http=redis_directive(rds.address()), server="""
        location /app/ {
            satisfy any; deny all;
            session_check on; session_jwt_keys %s; session_jwt_issuer %s; session_jwt_handshake %s;
            proxy_pass http://app;
        }""" % (tmp_path / "k.json", fapi.issuer, fapi.url))
    t = key.mint(T.session_claims("user_hs", "sess_hs", fapi.issuer, iat=int(time.time()) - 600))
    resp = n.get("/app/", headers=dict(NAV, **cookies(__session=t, __client_uat=int(time.time()) - 900)))
    assert resp.status in (401, 403) and resp.header("Location") is None, T.redact(resp)


# ---------------------------------------------------------------- coming back

def round_trip(site, fapi, key, path="/app/page?x=1"):
    """Navigation with an expired cookie -> nginx -> the stand-in -> back to
    nginx with the handshake result. The response to that last request, the
    stand-in's redirect and the cookies the browser held."""
    held = {"__session": expired(key, fapi, site), "__client_uat": int(time.time()) - 900}
    first = site.get(path, headers=dict(NAV, **cookies(**held)))
    assert_handshake_redirect(first, site, fapi, path)
    back = follow_to_fapi(first, fapi)
    assert fapi.handshakes()[-1]["query"]["redirect_url"] == site.origin + path, T.redact(fapi.handshakes())
    held.update(jar(set_cookies(back)))  # cookie mode: the __clerk_handshake cookie
    loc = urllib.parse.urlsplit(back.header("Location"))
    assert loc.netloc == site.origin.split("//")[1], T.redact(back.headers)
    target = loc.path + ("?" + loc.query if loc.query else "")
    return site.get(target, headers=dict(NAV, **cookies(**held))), held


@pytest.mark.parametrize("mode", ["query", "cookie"])
def test_handshake_sets_the_cookies_and_redirects_back(site, fapi, key, upstream, mode):
    fapi.mode = mode
    resp, held = round_trip(site, fapi, key)
    assert resp.status == 307, T.redact(resp)
    assert same_url(resp.header("Location", ""), site, "/app/page?x=1"), T.redact(resp.headers)
    assert "no-store" in resp.header("Cache-Control", ""), T.redact(resp.headers)
    sent = set_cookies(resp)
    for directive in fapi.last_directives:
        assert sent.count(directive) == 1, T.redact((directive.split("=")[0], sent))
    new = jar(sent)
    assert T.digest(new.get("__session", "")) == T.digest(fapi.last_session_token)
    assert int(new["__client_uat"]) > 0, T.redact(new)
    assert upstream.requests == [], T.redact(upstream.requests)
    held.update(new)
    held.pop("__clerk_handshake", None)
    final = site.get("/app/page?x=1", headers=dict(NAV, **cookies(**held)))
    assert final.status == 200, T.redact(final)
    assert final.upstream_header("X-User-Id") == "user_hs", T.redact(final.upstream_headers("X-User-Id"))
    assert final.upstream_header("X-Session-Id") == "sess_hs", T.redact(final.upstream_headers("X-Session-Id"))
    assert final.upstream_header("X-User-Role") == "member", T.redact(final.upstream_headers("X-User-Role"))
    assert_clean(site, fapi.last_session_token, fapi.last_handshake_token)


def test_handshake_of_a_signed_out_client(site, fapi, key):
    fapi.signed_out()
    resp, held = round_trip(site, fapi, key, path="/login/x")
    assert resp.status == 307, T.redact(resp)
    sent = set_cookies(resp)
    assert [c for c in sent if c.startswith("__client_uat=0")], T.redact(sent)
    assert [c for c in sent if c.startswith("__session=;")], T.redact(sent)
    final = site.get("/login/x", headers=dict(NAV, **cookies(__client_uat=0)))
    assert final.status == 302, T.redact(final)
    assert final.header("Location", "").endswith("/sign-in")
    assert_clean(site, fapi.last_handshake_token)


@pytest.mark.parametrize("case", ["hostile-directive", "header-injection", "foreign-key",
                                  "template-category", "expired", "session-token"])
def test_bad_handshake_token_is_refused(site, fapi, key, upstream, case):
    # control: the stand-in's own token, on the same URL, is resolved
    good = site.get("/app/?__clerk_handshake=%s" % fapi.handshake_token("%s/app/" % site.origin),
                    headers=NAV)
    assert good.status == 307 and jar(set_cookies(good)).get("__session"), T.redact(good)
    if case == "hostile-directive":
        fapi.hostile("sessionid=evil; Path=/")
    elif case == "header-injection":
        fapi.hostile("__client_uat=1\r\nX-Evil: 1; Path=/")
    elif case == "foreign-key":
        fapi.signer = T.SigningKey(kid=key.kid)
    elif case == "template-category":
        fapi.handshake_header = {"cat": T.TEMPLATE_CATEGORY}
    token = fapi.handshake_token("%s/app/" % site.origin)
    if case == "expired":
        token = T.handshake_token(key, fapi.last_directives, iat=int(time.time()) - 600)
    elif case == "session-token":  # a valid session token has no `handshake` claim
        token = fapi.last_session_token
    resp = site.get("/app/?__clerk_handshake=%s" % token, headers=NAV)
    assert resp.status == 401, T.redact(resp)
    assert resp.header("X-Evil") is None, T.redact(resp)
    sent = set_cookies(resp)
    assert not [c for c in sent if c.startswith(("sessionid=", "__session=", "__client_uat="))], T.redact(sent)
    assert upstream.requests == [], T.redact(upstream.requests)
    # the cookie form is refused alike
    resp = site.get("/app/", headers=dict(NAV, **cookies(__clerk_handshake=token)))
    assert resp.status == 401, T.redact(resp)
    sent = [c for c in set_cookies(resp) if c.startswith(("sessionid=", "__session="))]
    assert not sent, T.redact(sent)
    assert_clean(site, token, fapi.last_session_token)
