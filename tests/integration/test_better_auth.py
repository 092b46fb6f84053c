"""better-auth mode (session_better_auth): the real `better-auth` package from
npm (tests/better_auth/app.mjs: a memory database and `secondaryStorage` on
this file's redis-server) signs users up and in; nginx verifies the signed
cookie it sets and reads the session better-auth stored in Redis.

better-auth's formats (checked against 1.7.25, see docs/redis-contract.md):
the cookie `better-auth.session_token` = urlencode(<token>.<base64
HMAC-SHA256(secret, token)>); the key <token> holds JSON {"session": {...},
"user": {...}}; signing out deletes it."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import urllib.parse
import uuid

import pytest

from harness import (METRICS_LOCATION, REDIS_TLS, REPO, SESSION_HEADERS, metric, nginx_t_conf,
                     nginx_test_config, parse_metrics, redis_directive, request, terminate,
                     test_pki, wait_until)

APP_DIR = os.path.join(REPO, "tests", "better_auth")
SECRET = "nginx-test-better-auth-secret-0123456789abcdef"  # the app's BETTER_AUTH_SECRET
OTHER_SECRET = "another-better-auth-secret-fedcba9876543210xyz"
COOKIE = "better-auth.session_token"


def ensure_node_modules():
    """npm ci in tests/better_auth when its node_modules is missing (as
    bench/run.sh does for bench/node), from the committed package-lock.json."""
    if os.path.isdir(os.path.join(APP_DIR, "node_modules", "better-auth")):
        return
    npm = shutil.which(os.environ.get("NPM", "npm"))
    assert npm, "npm is needed for tests/better_auth (scripts/deps.sh installs nodejs and npm)"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=APP_DIR,
                   check=True, timeout=600)


class App:
    """tests/better_auth/app.mjs, on a free port it prints."""

    def __init__(self, redis_port, workdir):
        ensure_node_modules()
        env = dict(os.environ, REDIS_URL="redis://127.0.0.1:%d" % redis_port,
                   BETTER_AUTH_SECRET=SECRET, NODE_ENV="test")
        if REDIS_TLS:  # SESSION_TEST_REDIS_TLS=1: the redis-server speaks TLS only
            env.update(REDIS_URL="rediss://127.0.0.1:%d" % redis_port,
                       NODE_EXTRA_CA_CERTS=test_pki().ca_cert)
        self.log_path = os.path.join(workdir, "app.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([os.environ.get("NODE", "node"), "app.mjs"], cwd=APP_DIR,
                                     env=env, stdout=subprocess.PIPE, stderr=self._log, text=True)
        line = self.proc.stdout.readline()  # "port N" once listening
        assert line.startswith("port "), "app.mjs did not start: %r\n%s" % (line, self.log())
        self.port = int(line.split()[1])
        self.origin = "http://127.0.0.1:%d" % self.port

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def post(self, path, body=None, cookie_header=None):
        headers = {"Content-Type": "application/json", "Origin": self.origin}
        if cookie_header:
            headers["Cookie"] = cookie_header
        resp = request(self.port, path, method="POST", headers=headers,
                       body=json.dumps(body or {}))
        assert resp.status == 200, "%s: %r\n%s" % (path, resp, self.log())
        return resp

    def sign_up_and_in(self, name="Ada"):
        """A new user, signed in: (user id, the session cookie's value)."""
        email = "%s-%s@example.com" % (name.lower(), uuid.uuid4().hex[:8])
        user = self.post("/api/auth/sign-up/email",
                         {"email": email, "password": "correct horse 1234", "name": name}).json()
        resp = self.post("/api/auth/sign-in/email",
                         {"email": email, "password": "correct horse 1234"})
        for value in resp.header_all("Set-Cookie"):
            name_value = value.split(";", 1)[0]
            if name_value.startswith(COOKIE + "="):
                return user["user"]["id"], name_value[len(COOKIE) + 1:]
        raise AssertionError("no %s cookie in %r" % (COOKIE, resp.headers))

    def sign_out(self, cookie_value):
        self.post("/api/auth/sign-out", cookie_header="%s=%s" % (COOKIE, cookie_value))

    def update_user(self, user_id, data):
        self.post("/test/update-user", {"userId": user_id, "data": data})

    def close(self):
        terminate(self.proc)
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture(scope="module")
def app(redis_server, tmp_path_factory):
    a = App(redis_server.port, str(tmp_path_factory.mktemp("better-auth")))
    yield a
    a.close()


@pytest.fixture
def ba(rds, r, app):
    """The app, with keyspace notifications off unless a test turns them on."""
    r.config_set("notify-keyspace-events", "")
    yield app
    r.config_set("notify-keyspace-events", "")


def token_of(cookie_value):
    return urllib.parse.unquote(cookie_value).rsplit(".", 1)[0]


def signed(token, secret):
    sig = base64.b64encode(hmac.new(secret.encode(), token.encode(), hashlib.sha256).digest())
    return urllib.parse.quote("%s.%s" % (token, sig.decode()), safe="")


def ba_cookie(value):
    return {"Cookie": "%s=%s" % (COOKIE, value)}


def secret_file(tmp_path, *secrets, name="ba-secret"):
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write("".join(s + "\n" for s in secrets))
    return path


def location(path, directives):
    return """
        location %s {
            session_check on;
            %s
            %s
            proxy_pass http://app;
        }""" % (path, directives, SESSION_HEADERS)


def start(nginx, rds, tmp_path, secrets=(SECRET,), cache=None, http=""):
    """/app/ and /admin/ (session_require_role admin) in better-auth mode;
    `cache`: session_cache_zone parameters (the zone `ba`), or None."""
    ba_line = "session_better_auth secret_file=%s;" % secret_file(tmp_path, *secrets)
    zone, use = "", ""
    if cache:
        zone = "session_cache_zone ba:1m %s;" % cache
        use = "session_cache ba;"
    return nginx(http=redis_directive(rds.address()) + zone + http,
                 server=ba_line + use + location("/app/", "")
                 + location("/admin/", "session_require_role admin;") + METRICS_LOCATION)


def stored(r, token):
    return json.loads(r.get(token))


# --- accepted ----------------------------------------------------------------


def test_signed_in_user_reaches_the_upstream_with_identity_and_role(nginx, rds, r, ba, upstream,
                                                                    tmp_path):
    user_id, value = ba.sign_up_and_in("Ada")
    session = stored(r, token_of(value))
    n = start(nginx, rds, tmp_path)
    resp = n.get("/app/", headers=ba_cookie(value))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == user_id
    assert resp.upstream_header("X-User-Db-Id") == user_id
    assert resp.upstream_header("X-User-Email") == session["user"]["email"]
    assert resp.upstream_header("X-User-Role") == "user"  # the admin plugin's default
    assert resp.upstream_header("X-Session-Id") == session["session"]["id"]
    assert resp.upstream_header("X-Session-Status") == "ok"
    assert n.get("/admin/", headers=ba_cookie(value)).status == 403
    assert n.last_session_status() == "forbidden"

    # better-auth's own user update rewrites the cached session (admin
    # plugin: setRole); several roles are comma-separated there.
    ba.update_user(user_id, {"role": "editor,admin"})
    wait_until(lambda: stored(r, token_of(value))["user"]["role"] == "editor,admin", 10,
               what="better-auth to rewrite the session")
    resp = n.get("/admin/", headers=ba_cookie(value))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Role") == "editor"
    assert resp.upstream_header("X-User-Roles") == "editor admin"


def test_secure_cookie_name_is_read_too(nginx, rds, r, ba, upstream, tmp_path):
    user_id, value = ba.sign_up_and_in()
    n = start(nginx, rds, tmp_path)
    resp = n.get("/app/", headers={"Cookie": "__Secure-%s=%s" % (COOKIE, value)})
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == user_id


def test_rotated_secret_old_cookie_accepted_while_listed(nginx, rds, r, ba, upstream, tmp_path):
    _, value = ba.sign_up_and_in()  # signed with SECRET by better-auth
    n = start(nginx, rds, tmp_path, secrets=(OTHER_SECRET, SECRET))
    assert n.get("/app/", headers=ba_cookie(value)).status == 200
    n2 = start(nginx, rds, tmp_path, secrets=(OTHER_SECRET,))
    assert n2.get("/app/", headers=ba_cookie(value)).status == 401
    assert n2.last_session_status() == "invalid"


# --- refused before Redis ------------------------------------------------------


@pytest.mark.parametrize("how", ["tampered signature", "another secret", "no signature",
                                 "tampered token"])
def test_bad_signature_is_invalid_without_asking_redis(nginx, rds, r, ba, upstream, tmp_path,
                                                       how):
    _, value = ba.sign_up_and_in()
    token = token_of(value)
    sig = urllib.parse.unquote(value).rsplit(".", 1)[1]
    bad = {
        "tampered signature": urllib.parse.quote(
            "%s.%s" % (token, ("B" if sig[0] == "A" else "A") + sig[1:]), safe=""),
        "another secret": signed(token, OTHER_SECRET),
        "no signature": token,
        "tampered token": urllib.parse.quote("%s.%s" % (token[:-1] + "x", sig), safe=""),
    }[how]
    n = start(nginx, rds, tmp_path)
    r.config_resetstat()
    resp = n.get("/app/", headers=ba_cookie(bad))
    assert resp.status == 401, resp
    assert n.last_session_status() == "invalid"
    assert rds.calls("get") == 0
    assert upstream.requests == []


# --- refused after Redis -------------------------------------------------------


def test_sign_out_is_refused_at_once_without_cache(nginx, rds, r, ba, upstream, tmp_path):
    _, value = ba.sign_up_and_in()
    n = start(nginx, rds, tmp_path)
    assert n.get("/app/", headers=ba_cookie(value)).status == 200
    ba.sign_out(value)
    assert r.get(token_of(value)) is None
    assert n.get("/app/", headers=ba_cookie(value)).status == 401
    assert n.last_session_status() == "invalid"


def test_sign_out_with_cache_is_refused_once_the_ttl_has_passed(nginx, rds, r, ba, upstream,
                                                                 tmp_path):
    # Two zones: one whose ttl outlives the test (the signed-out session is
    # still served from it: what the cache costs) and one of 1s.
    _, value = ba.sign_up_and_in()
    secrets = secret_file(tmp_path, SECRET)
    n = nginx(http=redis_directive(rds.address())
              + "session_cache_zone long:1m ttl=1h; session_cache_zone short:1m ttl=1s;",
              server="session_better_auth secret_file=%s;" % secrets
              + location("/long/", "session_cache long;")
              + location("/short/", "session_cache short;"))
    for path in ("/long/", "/short/"):
        assert n.get(path, headers=ba_cookie(value)).status == 200
    ba.sign_out(value)
    assert n.get("/long/", headers=ba_cookie(value)).status == 200
    wait_until(lambda: n.get("/short/", headers=ba_cookie(value)).status == 401, 10,
               what="the 1s cache entry to expire")
    assert n.last_session_status() == "invalid"


@pytest.mark.parametrize("event", ["sign-out (del)", "expiry (expired)"])
def test_keyspace_notifications_drop_cached_sessions_at_once(nginx, rds, r, ba, upstream,
                                                             tmp_path, event):
    r.config_set("notify-keyspace-events", "Egx")
    _, value = ba.sign_up_and_in()
    n = start(nginx, rds, tmp_path, cache="ttl=1h")
    assert n.get("/app/", headers=ba_cookie(value)).status == 200
    assert n.get("/app/", headers=ba_cookie(value)).status == 200  # from the cache
    if event.startswith("sign-out"):
        ba.sign_out(value)
    else:
        r.pexpire(token_of(value), 50)
    # Without the notification the entry would serve for an hour.
    wait_until(lambda: n.get("/app/", headers=ba_cookie(value)).status == 401, 10,
               what="the cached session to be dropped")
    assert n.last_session_status() == "invalid"


def test_expired_session_is_refused(nginx, rds, r, ba, upstream, tmp_path):
    _, value = ba.sign_up_and_in()
    token = token_of(value)
    data = stored(r, token)
    data["session"]["expiresAt"] = "2020-01-01T00:00:00.000Z"
    r.set(token, json.dumps(data), keepttl=True)
    n = start(nginx, rds, tmp_path)
    assert n.get("/app/", headers=ba_cookie(value)).status == 401
    assert n.last_session_status() == "expired"


def test_banned_user_is_refused(nginx, rds, r, ba, upstream, tmp_path):
    user_id, value = ba.sign_up_and_in()
    n = start(nginx, rds, tmp_path)
    assert n.get("/app/", headers=ba_cookie(value)).status == 200
    # The admin plugin's ban sets `banned` (and revokes the sessions; here
    # only the field, which better-auth copies into every cached session).
    ba.update_user(user_id, {"banned": True})
    wait_until(lambda: stored(r, token_of(value))["user"]["banned"] is True, 10,
               what="better-auth to rewrite the session")
    assert n.get("/app/", headers=ba_cookie(value)).status == 401
    assert n.last_session_status() == "revoked"


@pytest.mark.parametrize("garbage", ["not json", "{}", '{"session": {}, "user": {}}', "[1,2]",
                                     '{"session": {"id": "s", "userId": "u", "expiresAt": '
                                     '"tomorrow"}, "user": {"id": "u"}}'])
def test_garbage_json_is_invalid(nginx, rds, r, ba, upstream, tmp_path, garbage):
    _, value = ba.sign_up_and_in()
    r.set(token_of(value), garbage)
    n = start(nginx, rds, tmp_path)
    assert n.get("/app/", headers=ba_cookie(value)).status == 401
    assert n.last_session_status() == "invalid"
    assert upstream.requests == []


def test_key_of_the_wrong_type_is_invalid_not_an_outage(nginx, rds, r, ba, upstream, tmp_path):
    _, value = ba.sign_up_and_in()
    token = token_of(value)
    r.delete(token)
    r.hset(token, "session", "x")
    n = start(nginx, rds, tmp_path)
    assert n.get("/app/", headers=ba_cookie(value)).status == 401
    assert n.last_session_status() == "invalid"


def test_control_bytes_in_stored_fields_are_refused(nginx, rds, r, ba, upstream, tmp_path):
    _, value = ba.sign_up_and_in()
    token = token_of(value)
    data = stored(r, token)
    data["user"]["email"] = "a@example.com\r\nX-Injected: 1"
    r.set(token, json.dumps(data), keepttl=True)
    n = start(nginx, rds, tmp_path)
    assert n.get("/app/", headers=ba_cookie(value)).status == 401
    assert n.last_session_status() == "invalid"
    assert "control byte" in n.log()


# --- the rest of the module, unchanged ---------------------------------------


def test_opaque_token_of_the_same_text_shares_no_cache_entry(nginx, rds, r, ba, upstream,
                                                             tmp_path):
    user_id, value = ba.sign_up_and_in()
    token = token_of(value)
    r.hset("sess:" + token, mapping={"user_id": "opaque_user", "expires_at": "99999999999999"})
    secrets = secret_file(tmp_path, SECRET)
    n = nginx(http=redis_directive(rds.address()) + "session_cache_zone ba:1m ttl=1h;",
              server="session_cache ba;"
              + location("/opaque/", "session_token cookie=sid;")
              + location("/ba/", "session_better_auth secret_file=%s;" % secrets))
    for _ in range(2):  # the second round from the cache
        resp = n.get("/opaque/", headers={"Cookie": "sid=" + token})
        assert resp.upstream_header("X-User-Id") == "opaque_user"
        resp = n.get("/ba/", headers=ba_cookie(value))
        assert resp.upstream_header("X-User-Id") == user_id


def test_redis_down_follows_fail_mode_and_stale(nginx, rds, r, ba, upstream, tmp_path):
    _, value = ba.sign_up_and_in()
    n = start(nginx, rds, tmp_path, cache="ttl=1s stale=1h")
    assert n.get("/app/", headers=ba_cookie(value)).status == 200
    rds.stop()
    try:
        # Once the entry's ttl has passed it is served as stale.
        wait_until(lambda: n.get("/app/", headers=ba_cookie(value)).status == 200
                   and n.last_session_status() == "stale", 10, what="a stale answer")
        other = signed("unknownToken0123456789abcdefABCD", SECRET)
        assert n.get("/app/", headers=ba_cookie(other)).status == 503
        assert n.last_session_status() == "error"
    finally:
        rds.start()


def test_metrics_count_better_auth_checks(nginx, rds, r, ba, upstream, tmp_path):
    _, value = ba.sign_up_and_in()
    n = start(nginx, rds, tmp_path, cache="ttl=1h")
    for _ in range(3):
        assert n.get("/app/", headers=ba_cookie(value)).status == 200
    values, _ = parse_metrics(n.get("/metrics").body)
    assert metric(values, "nginx_session_checks_total", '{outcome="ok"}') == 3
    assert metric(values, "nginx_session_cache_hits_total") == 2
    assert metric(values, "nginx_session_redis_lookup_seconds_count") == 1


# --- configuration -------------------------------------------------------------


@pytest.mark.parametrize("args,content,message", [
    ("secret_file=@TMP@/missing", None, "cannot open secret file"),
    ("secret_file=@TMP@/secret", "\n  \n", "holds no secret"),
    ("cookie=x", None, "needs secret_file=FILE"),
    ("secret_file=@TMP@/secret foo=1", "s3cret", 'invalid parameter "foo=1"'),
    ("secret_file=@TMP@/secret cookie=a,b", "s3cret", 'invalid parameter "cookie=a,b"'),
])
def test_config_errors_name_the_directive(tmp_path, args, content, message):
    tmp = str(tmp_path)
    if content is not None:
        with open(os.path.join(tmp, "secret"), "w") as f:
            f.write(content)
    text = nginx_t_conf(location="session_check on; session_better_auth %s;"
                        % args.replace("@TMP@", tmp))
    rc, out = nginx_test_config(text.replace("@TMP@", tmp), workdir=tmp)
    assert rc != 0, out
    assert message in out and "session_better_auth" in out, out
    assert "s3cret" not in out
