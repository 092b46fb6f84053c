"""JWT mode: Clerk session tokens verified in nginx (session_jwt_*). What is
accepted, every refusal (401 `invalid`, no Redis command, the token never in
the error log), identity / claim / organization variables, key rotation by
reload, and nginx -t. The Redis overlay and the gates: test_jwt_overlay.py;
the handshake: test_handshake.py.

PYTEST_DONT_REWRITE: pytest's assertion introspection would print the
tokens these tests send and receive; every assertion here carries its own
message, with tokens replaced by their digest (tokens.redact)."""

import json
import time

import pytest

import jwt_suite  # puts tests/clerk on sys.path
import tokens as T

import harness
from harness import redis_directive, seed_session, seed_session_v2, wait_until
from jwt_suite import _redacted_responses, keys  # noqa: F401: fixtures
from jwt_suite import AZP, ISS, assert_not_logged, claims, expect, session_cookie, tok, write

JWT_HEADERS = harness.SESSION_HEADERS + """
            proxy_set_header X-Org-Id          $session_org_id;
            proxy_set_header X-Org-Slug        $session_org_slug;
            proxy_set_header X-Org-Role        $session_org_role;
            proxy_set_header X-Org-Permissions $session_org_permissions;
            proxy_set_header X-Claim-Plan      $session_claim_plan;
            proxy_set_header X-Claim-Seats     $session_claim_seats;
            proxy_set_header X-Claim-Beta      $session_claim_beta;
            proxy_set_header X-Claim-Metadata  $session_claim_metadata;
            proxy_set_header X-Claim-Note      $session_claim_note;
            proxy_set_header X-Expires-In      $session_token_expires_in;"""
LOOKUPS = ("hmget", "evalsha", "eval")

key = jwt_suite.key_fixture("ins_test_1")
other = jwt_suite.key_fixture("ins_other")


def location(path, keys, directives="", parties=AZP):
    """A JWT location whose upstream sees the claim variables too."""
    return jwt_suite.location(path, keys, directives, parties, headers=JWT_HEADERS)


def start(nginx, rds, keys, locations=(("/app/", ""),), http="", **kw):
    return jwt_suite.start(nginx, rds.address(), keys, locations, http=http, headers=JWT_HEADERS, **kw)


# ---------------------------------------------------------------- accepted

def test_valid_token_in_cookie(nginx, rds, upstream, key, keys):
    n = start(nginx, rds, keys)
    t = tok(key, sub="user_a", sid="sess_a", metadata={"role": "editor"})
    resp = n.get("/app/page?q=1", headers=session_cookie(t))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Session-Id") == "sess_a", T.redact(resp.upstream_headers("X-Session-Id"))  # the sid, never the token
    assert resp.upstream_header("X-User-Id") == "user_a", T.redact(resp.upstream_headers("X-User-Id"))
    assert resp.upstream_header("X-User-Role") == "editor", T.redact(resp.upstream_headers("X-User-Role"))
    assert resp.upstream_header("X-User-Roles") == "editor", T.redact(resp.upstream_headers("X-User-Roles"))
    assert resp.upstream_header("X-User-Db-Id") is None, T.redact(resp.upstream_headers("X-User-Db-Id"))
    assert resp.upstream_header("X-User-Email") is None, T.redact(resp.upstream_headers("X-User-Email"))
    assert resp.upstream_header("X-Session-Status") == "ok", T.redact(resp.upstream_headers("X-Session-Status"))
    assert n.last_session_status() == "ok", T.redact(n.session_log()[-3:])
    assert_not_logged(n, t)


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
@pytest.mark.parametrize("form", ["jwk", "pem"])
def test_bearer_token_each_rsa_algorithm(nginx, rds, tmp_path, key, alg, form):
    # a JWK names its algorithm (Clerk's say RS256); a PEM key does not
    text = (json.dumps({"keys": [dict(key.jwk(), alg=alg)]}) if form == "jwk" else key.public_pem())
    n = start(nginx, rds, write(tmp_path, "key." + form, text))
    resp = n.get("/app/", headers=harness.bearer(key.mint(claims(sid="sess_b"), alg=alg)))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Session-Id") == "sess_b", T.redact(resp.upstream_headers("X-Session-Id"))


def test_token_alg_must_match_the_jwk_alg(nginx, rds, upstream, key, keys):
    n = start(nginx, rds, keys)  # the JWK says RS256
    expect(n.get("/app/", headers=harness.bearer(key.mint(claims(), alg="RS512"))), 401)
    assert upstream.requests == [], T.redact(upstream.requests)


@pytest.mark.parametrize("header", [{"cat": None}, {"cat": T.IGNORE_CATEGORY}, {"typ": None}],
                         ids=["no-cat", "ignore-cat", "no-typ"])
def test_header_variants_accepted(nginx, rds, key, keys, header):
    n = start(nginx, rds, keys)
    expect(n.get("/app/", headers=session_cookie(key.mint(claims(), header=header))), 200)


def test_pem_key_and_several_files(nginx, rds, tmp_path, key, other):
    # a PEM carries no kid: it is the key, whatever kid the token names
    pem = write(tmp_path, "other.pem", other.public_pem())
    jwks = write(tmp_path, "jwks.json", T.jwks(key))
    n = start(nginx, rds, "%s %s" % (jwks, pem))
    expect(n.get("/app/", headers=session_cookie(tok(key))), 200)
    expect(n.get("/app/", headers=session_cookie(other.mint(claims(), kid="ins_whatever"))), 200)
    expect(n.get("/app/", headers=session_cookie(other.mint(claims(), kid=None))), 200)


def test_jwks_chooses_the_key_by_kid(nginx, rds, upstream, tmp_path, key, other):
    n = start(nginx, rds, write(tmp_path, "jwks.json", T.jwks(key, other)))
    expect(n.get("/app/", headers=session_cookie(tok(key))), 200)
    expect(n.get("/app/", headers=session_cookie(tok(other))), 200)
    # the right kid, the wrong key
    forged = other.mint(claims(), kid=key.kid)
    expect(n.get("/app/", headers=session_cookie(forged)), 401)
    assert len(upstream.requests) == 2, T.redact(upstream.requests)


def test_any_of_several_authorized_parties(nginx, rds, key, tmp_path):
    keys = write(tmp_path, "jwks.json", T.jwks(key))
    n = nginx(http=redis_directive(rds.address()), server=location(
        "/app/", keys, parties="%s https://admin.example.test" % AZP))
    for azp in (AZP, "https://admin.example.test"):
        expect(n.get("/app/", headers=session_cookie(tok(key, azp=azp))), 200, azp)
    expect(n.get("/app/", headers=session_cookie(tok(key, azp="https://admin.example.tes"))), 401)


def test_leeway(nginx, rds, key, keys):
    n = start(nginx, rds, keys, locations=(("/app/", ""), ("/lenient/", "session_jwt_leeway 2m;")))
    late = tok(key, iat=int(time.time()) - 90, lifetime=60)  # expired 30 s ago
    expect(n.get("/app/", headers=session_cookie(late)), 401)
    expect(n.get("/lenient/", headers=session_cookie(late)), 200)


def test_opaque_token_keeps_the_redis_lookup(nginx, rds, r, keys):
    seed_session_v2(r, "sess_opaque", "user_o")
    n = start(nginx, rds, keys)
    resp = n.get("/app/", headers=session_cookie("sess_opaque"))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Session-Id") == "sess_opaque", T.redact(resp.upstream_headers("X-Session-Id"))
    assert rds.calls("hmget") == 1, rds.calls("hmget")


@pytest.mark.parametrize("cache", [False, True])
def test_two_dots_outside_base64url_is_an_opaque_token(nginx, rds, r, keys, cache):
    # Three parts, but '+' and '~' are not base64url: not the shape of a
    # JWT, so the session id it is gets the opaque lookup, cache or not.
    seed_session_v2(r, "app+1.x~y.z", "user_o")
    zone = "session_cache_zone zone1:1m;\n" if cache else ""
    where = "session_cache zone1;" if cache else ""
    n = start(nginx, rds, keys, locations=(("/app/", where),), http=zone)
    resp = n.get("/app/", headers=session_cookie("app+1.x~y.z"))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Session-Id") == "app+1.x~y.z"
    assert rds.calls("hmget") == 1, rds.calls("hmget")


def test_token_of_4096_characters(nginx, rds, r, key, keys):
    def sized(extra):
        return tok(key, blob="x" * extra)
    extra = 4096 - len(sized(0))
    extra = int(extra * 3 / 4)
    while len(sized(extra)) > 4096:
        extra -= 1
    big = sized(extra)
    assert 4090 <= len(big) <= 4096, len(big)
    n = start(nginx, rds, keys)
    resp = n.get("/app/", headers=session_cookie(big))
    assert resp.status == 200, T.redact((len(big), resp))
    too_big = sized(extra + 8)
    assert len(too_big) > 4096
    lookups = rds.calls(*LOOKUPS)
    expect(n.get("/app/", headers=session_cookie(too_big)), 401)
    assert n.last_session_status() == "invalid", T.redact(n.session_log()[-3:])
    assert rds.calls(*LOOKUPS) == lookups, rds.calls(*LOOKUPS)
    assert_not_logged(n, too_big)


# ---------------------------------------------------------------- refused

def _impossible_b64(segment):
    while len(segment) % 4 != 1:
        segment += "A"
    return segment


def _without(name):
    def make(key, other):
        c = claims()
        del c[name]
        return key.mint(c)
    return make


def _tampered(k, o):
    head, _, sig = k.mint(claims()).split(".")
    return ".".join([head, T.b64u(T._json(claims(sub="user_admin"))), sig])


# case: (the check it is built to trip, as nginx logs it at info; the token)
REFUSALS = {
    "alg-none": ("algorithm", lambda k, o: k.mint(claims(), header={"alg": "none"}, signature=b"\1" * 32)),
    "hs256-with-public-key": ("algorithm", lambda k, o: k.mint(claims(), alg="HS256")),
    "unknown-kid": ("unknown_key", lambda k, o: k.mint(claims(), kid="ins_unknown")),
    "foreign-key": ("signature", lambda k, o: o.mint(claims(), kid=k.kid)),
    "tampered-payload": ("signature", _tampered),
    "typ-not-jwt": ("type", lambda k, o: k.mint(claims(), header={"typ": "at+jwt"})),
    "cat-template": ("category", lambda k, o: k.mint(claims(), header={"cat": T.TEMPLATE_CATEGORY})),
    "cat-machine": ("category", lambda k, o: k.mint(claims(), header={"cat": T.MACHINE_CATEGORY})),
    "cat-unknown": ("category", lambda k, o: k.mint(claims(), header={"cat": "cl_future"})),
    "bad-base64url": ("malformed", lambda k, o: k.mint_segments(
        T.b64u(b'{"alg":"RS256","typ":"JWT","kid":"ins_test_1"}'), _impossible_b64(T.b64u(T._json(claims()))))),
    "payload-not-json": ("malformed", lambda k, o: k.mint(b'{"sub":"user_1","sid":')),
    "header-not-json": ("malformed", lambda k, o: k.mint_segments(T.b64u(b'{"alg":"RS256",'),
                                                                  T.b64u(T._json(claims())))),
    "wrong-issuer": ("issuer", lambda k, o: k.mint(T.session_claims("user_1", "sess_1", "https://clerk.other.test",
                                                                    azp=AZP))),
    "azp-not-allowed": ("authorized_party", lambda k, o: k.mint(claims(azp="https://evil.example.test"))),
    "azp-missing": ("authorized_party", lambda k, o: k.mint(claims(azp=None))),
    "expired": ("expired", lambda k, o: k.mint(claims(iat=int(time.time()) - 120))),
    "nbf-in-future": ("not_yet_valid", lambda k, o: k.mint(claims(nbf=int(time.time()) + 60))),
    "iat-in-future": ("issued_in_future", lambda k, o: k.mint(claims(iat=int(time.time()) + 120, nbf=None))),
    "sts-pending": ("pending", lambda k, o: k.mint(claims(sts="pending"))),
    "no-sub": ("subject", _without("sub")),
    "no-sid": ("subject", _without("sid")),
    "sub-not-string": ("subject", lambda k, o: k.mint(claims(sub=12345))),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
@pytest.mark.parametrize("carrier", ["cookie", "bearer"])
def test_refused_without_redis(nginx, rds, r, upstream, key, other, keys, case, carrier):
    reason, make = REFUSALS[case]
    token = make(key, other)
    assert token.count(".") == 2 and all(token.split(".")), "not JWT-shaped"
    seed_session(r, "sess_1", "user_1")  # a session exists: only the token is at fault
    n = start(nginx, rds, keys)
    headers = session_cookie(token) if carrier == "cookie" else harness.bearer(token)
    resp = n.get("/app/", headers=headers)
    assert resp.status == 401, T.redact(resp)
    assert upstream.requests == [], T.redact(upstream.requests)
    assert n.last_session_status() == "invalid", T.redact(n.session_log()[-3:])
    assert rds.calls(*LOOKUPS) == 0, "a refused token reached Redis"
    assert_not_logged(n, token)
    if harness.LOG_LEVEL in ("info", "debug"):
        logged = "token refused: %s," % reason in n.log()
        assert logged, T.redact(n.log_tail(3))
    # control: the same location accepts a good token of the same session
    expect(n.get("/app/", headers=session_cookie(tok(key))), 200)


def test_alg_none_with_empty_signature(nginx, rds, upstream, key, keys):
    token = key.mint(claims(), alg="none")  # "header.payload." : not JWT-shaped
    n = start(nginx, rds, keys)
    resp = n.get("/app/", headers=session_cookie(token))
    assert resp.status == 401, T.redact(resp)
    assert upstream.requests == [], T.redact(upstream.requests)
    assert_not_logged(n, token)


# ---------------------------------------------------------------- variables

def test_claim_variables_and_expiry(nginx, rds, key, keys):
    n = start(nginx, rds, keys)
    t = tok(key, lifetime=3600, plan="pro", seats=5, beta=True, metadata={"role": "viewer"},
            note="x\r\nX-Injected: 1")
    resp = n.get("/app/", headers=session_cookie(t))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_headers("X-Injected") == [], T.redact(resp)  # a line break is no scalar
    assert resp.upstream_header("X-Claim-Plan") == "pro", T.redact(resp.upstream_headers("X-Claim-Plan"))
    assert resp.upstream_header("X-Claim-Seats") == "5", T.redact(resp.upstream_headers("X-Claim-Seats"))
    assert resp.upstream_header("X-Claim-Beta") == "true", T.redact(resp.upstream_headers("X-Claim-Beta"))
    assert resp.upstream_header("X-Claim-Metadata") is None, T.redact(resp.upstream_headers("X-Claim-Metadata"))  # an object is not a scalar
    assert resp.upstream_header("X-Claim-Note") is None, T.redact(resp.upstream_headers("X-Claim-Note"))
    expires_in = int(resp.upstream_header("X-Expires-In"))
    assert 3000 <= expires_in <= 3600, expires_in


ORG = T.org_claim("org_1", "acme", "admin", ["read", "manage"],
                  [("billing", ["read"]), ("members", ["read", "manage"])],
                  user_features=["impersonation"])
# Raw v2 claims from the cases of Clerk's jwtPayloadParser spec
SDK_CASES = {
    "two-features": {"fea": "o:repositories,o:projects",
                     "o": {"id": "org_r", "slg": "r", "rol": "admin",
                           "per": "read,create,update,delete,revoke", "fpm": "7,21"}},
    "scoped-features": {"fea": "o:repositories,uo:projects,u:goldprofileborder",
                        "o": {"id": "org_s", "slg": "s", "rol": "member",
                              "per": "read,create,update,delete,revoke", "fpm": "7,21"}},
    "v2-org": ORG,
}


@pytest.mark.parametrize("case", sorted(SDK_CASES))
def test_org_variables_v2(nginx, rds, key, keys, case):
    c = claims(**SDK_CASES[case])
    expected = T.sdk_org_permissions(c)
    assert expected, "the case holds permissions"
    n = start(nginx, rds, keys)
    resp = n.get("/app/", headers=session_cookie(key.mint(c)))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Org-Id") == c["o"]["id"], T.redact(resp.upstream_headers("X-Org-Id"))
    assert resp.upstream_header("X-Org-Slug") == c["o"]["slg"], T.redact(resp.upstream_headers("X-Org-Slug"))
    assert resp.upstream_header("X-Org-Role") == "org:" + c["o"]["rol"], T.redact(resp.upstream_headers("X-Org-Role"))
    assert resp.upstream_header("X-Org-Permissions") == " ".join(expected), T.redact(resp.upstream_headers("X-Org-Permissions"))


def test_org_variables_v1_and_none(nginx, rds, key, keys):
    n = start(nginx, rds, keys)
    v1 = claims(v=None, org_id="org_v1", org_slug="old", org_role="org:member",
                org_permissions=["org:billing:read", "org:members:read"])
    resp = n.get("/app/", headers=session_cookie(key.mint(v1)))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Org-Id") == "org_v1", T.redact(resp.upstream_headers("X-Org-Id"))
    assert resp.upstream_header("X-Org-Role") == "org:member", T.redact(resp.upstream_headers("X-Org-Role"))
    assert resp.upstream_header("X-Org-Permissions") == "org:billing:read org:members:read", T.redact(resp.upstream_headers("X-Org-Permissions"))
    resp = n.get("/app/", headers=session_cookie(tok(key)))
    assert [resp.upstream_header(h) for h in ("X-Org-Id", "X-Org-Role", "X-Org-Permissions")] == [None] * 3


# ---------------------------------------------------------------- reload, nginx -t

def test_reload_with_a_new_key(nginx, rds, tmp_path, key):
    path = write(tmp_path, "jwks.json", T.jwks(key))
    n = start(nginx, rds, path)
    old = tok(key)
    expect(n.get("/app/", headers=session_cookie(old)), 200)
    new_key = T.SigningKey(kid="ins_test_2")
    new = tok(new_key)
    expect(n.get("/app/", headers=session_cookie(new)), 401)
    write(tmp_path, "jwks.json", T.jwks(new_key))
    before = set(n.worker_pids())
    n.reload()
    # until the old workers are gone, either generation may take a connection
    wait_until(lambda: n.worker_pids() and not before & set(n.worker_pids()), 15,
               what="the old workers to exit")
    expect(n.get("/app/", headers=session_cookie(new)), 200)
    expect(n.get("/app/", headers=session_cookie(old)), 401)


def nginx_t(tmp_path, http="session_redis 127.0.0.1:6379;", location_directives=""):
    text = harness.conf_text(str(tmp_path), 1, 1, http=http, server="""
        location /app/ { session_check on; %s proxy_pass http://app; }""" % location_directives)
    return harness.nginx_test_config(text, str(tmp_path))


def test_nginx_t_accepts_a_good_configuration(tmp_path, key):
    keys = write(tmp_path, "jwks.json", T.jwks(key))
    rc, out = nginx_t(tmp_path, location_directives=(
        "session_jwt_keys %s; session_jwt_issuer %s; session_jwt_authorized_parties %s; "
        "session_jwt_leeway 10s; session_jwt_session required; session_jwt_role_claim a.b; "
        "session_jwt_handshake https://clerk.example.test; session_require_org_role admin; "
        "session_require_permission org:billing:read;" % (keys, ISS, AZP)))
    assert rc == 0, out


def test_session_redis_only_needed_for_the_overlay(tmp_path, key):
    keys = write(tmp_path, "jwks.json", T.jwks(key))
    base = "session_jwt_keys %s; session_jwt_issuer %s;" % (keys, ISS)
    rc, out = nginx_t(tmp_path, http="", location_directives=base + " session_jwt_session off;")
    assert rc == 0, out
    rc, out = nginx_t(tmp_path, http="", location_directives=base)
    assert rc != 0 and "session_redis" in out, out


@pytest.mark.parametrize("case", ["missing-file", "malformed-jwks", "empty-jwks", "small-rsa-key",
                                  "keys-without-issuer", "bad-session-mode", "bad-handshake-url",
                                  "bad-leeway"])
def test_nginx_t_refuses(tmp_path, key, case):
    good = write(tmp_path, "jwks.json", T.jwks(key))
    files = {"malformed-jwks": '{"keys": [', "empty-jwks": '{"keys": []}',
             "small-rsa-key": T.jwks(T.SigningKey(bits=1024))}
    keys = write(tmp_path, "bad.json", files[case]) if case in files else good
    if case == "missing-file":
        keys = str(tmp_path / "no-such-file.json")
    base = "session_jwt_keys %s; session_jwt_issuer %s;" % (keys, ISS)
    directives, needle = {
        "keys-without-issuer": ("session_jwt_keys %s;" % keys, "session_jwt_issuer"),
        "bad-session-mode": (base + " session_jwt_session sometimes;", "session_jwt_session"),
        "bad-handshake-url": (base + " session_jwt_handshake ftp://clerk.example.test;",
                              "session_jwt_handshake"),
        "bad-leeway": (base + " session_jwt_leeway soon;", "session_jwt_leeway"),
    }.get(case, (base, "session_jwt_keys"))
    rc, out = nginx_t(tmp_path, location_directives=directives)
    assert rc != 0, "nginx -t accepted %s:\n%s" % (case, out)
    emerg = [line for line in out.splitlines() if "[emerg]" in line]
    assert emerg and "unknown directive" not in emerg[0], out
    assert needle in emerg[0], out
