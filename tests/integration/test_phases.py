"""How the check sits in nginx's request processing: subrequests, satisfy
any, internal redirects, other access modules."""

import os
import subprocess

from harness import (SESSION_HEADERS, app_location, cookie, redis_directive, seed_session,
                     seed_session_v2, seed_user)


def test_ssi_subrequest_skips_the_check(nginx, rds, upstream):
    n = nginx(http=redis_directive(rds.address()), server="""
        location /page/ {
            root @TMP@/html;
            default_type text/html;
            ssi on;
            ssi_types *;
        }""" + app_location("/app/"))
    os.makedirs(n.tmp + "/html/page")
    with open(n.tmp + "/html/page/index.html", "w") as f:
        f.write('<p>before</p><!--# include virtual="/app/fragment" --><p>after</p>')
    resp = n.get("/page/index.html")
    assert resp.status == 200, resp
    assert "<p>before</p>" in resp.body and "<p>after</p>" in resp.body
    assert '"path": "/app/fragment"' in resp.body, "the subrequest did not reach the upstream: %r" % resp.body
    assert len(upstream.requests) == 1
    # the same location directly: checked
    assert n.get("/app/fragment").status == 401


def test_auth_request_subrequest_skips_the_check(nginx, rds, upstream):
    # the subrequest location is protected, the main one is not: the main
    # request passes because the subrequest is not checked
    n = nginx(http=redis_directive(rds.address()), server="""
        location /guarded/ {
            auth_request /app/auth;
            proxy_pass http://app;
        }""" + app_location("/app/"))
    assert n.get("/guarded/x").status == 200
    assert [q["path"] for q in upstream.requests] == ["/app/auth", "/guarded/x"]


def test_satisfy_any_allowed_address_passes_without_token(nginx, rds, upstream):
    n = nginx(http=redis_directive(rds.address()), server="""
        location /app/ {
            satisfy any;
            allow 127.0.0.1;
            deny all;
            session_check on;
            session_token cookie=sessionId;
            %s
            proxy_pass http://app;
        }""" % SESSION_HEADERS)
    resp = n.get("/app/", headers={"X-User-Id": "user_evil"})
    assert resp.status == 200, resp
    assert resp.upstream_headers("X-User-Id") == []


def test_satisfy_any_denied_address_needs_session(nginx, rds, r):
    seed_session(r, "sess_sa", "user_sa")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /app/ {
            satisfy any;
            deny all;
            session_check on;
            session_token cookie=sessionId;
            %s
            proxy_pass http://app;
        }""" % SESSION_HEADERS)
    assert n.get("/app/").status in (401, 403)
    resp = n.get("/app/", headers=cookie("sess_sa"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_sa"


def test_satisfy_all_needs_both(nginx, rds, r):
    seed_session(r, "sess_b", "user_b")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /app/ {
            deny all;
            session_check on;
            session_token cookie=sessionId;
            proxy_pass http://app;
        }
        location /app2/ {
            allow all;
            session_check on;
            session_token cookie=sessionId;
            proxy_pass http://app;
        }""")
    assert n.get("/app/", headers=cookie("sess_b")).status == 403
    assert n.get("/app2/", headers=cookie("sess_b")).status == 200
    assert n.get("/app2/").status == 401


def test_internal_redirect_to_checked_location(nginx, rds, r, upstream):
    # try_files / error_page send the request through the access phase again
    seed_session(r, "sess_ir", "user_ir")
    seed_user(r, "user_ir", role="admin")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /front/ {
            rewrite ^/front/(.*)$ /app/$1 last;
        }
        location /err/ {
            return 418;
            error_page 418 = @checked;
        }
        location @checked {
            session_check on;
            session_token cookie=sessionId;
            %s
            proxy_pass http://app;
        }""" % SESSION_HEADERS + app_location("/app/"))
    resp = n.get("/front/x", headers=cookie("sess_ir"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_ir"
    assert n.get("/front/x").status == 401
    resp = n.get("/err/y", headers=cookie("sess_ir"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_ir"


def test_request_body_with_checked_post(nginx, rds, r):
    seed_session(r, "sess_post", "user_post")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    body = "x" * 100_000
    resp = n.get("/app/upload", method="POST", headers=cookie("sess_post"), body=body)
    assert resp.status == 200, resp
    assert resp.json()["body"] == body
    assert resp.upstream_header("X-User-Id") == "user_post"
    resp = n.get("/app/upload", method="POST", body=body)
    assert resp.status == 401, resp


def test_keepalive_connection_many_requests(nginx, rds, r):
    # several checked requests on one client connection
    import http.client
    seed_session(r, "sess_ka", "user_ka")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=15)
    try:
        for i in range(10):
            headers = cookie("sess_ka") if i % 2 == 0 else {}
            conn.request("GET", "/app/%d" % i, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == (200 if i % 2 == 0 else 401), i
    finally:
        conn.close()


def test_satisfy_any_failed_check_answers_only_401_or_403(nginx, rds, upstream):
    # README: under satisfy any a failed check answers 401 or 403 only: no
    # redirect, and 401 rather than 503 when Redis cannot answer
    down = "127.0.0.1:%d" % __import__("harness").free_port()
    n = nginx(http=redis_directive(down), server="""
        location /app/ {
            satisfy any;
            deny all;
            session_check on;
            session_token cookie=sessionId;
            session_redirect /sign-in;
            proxy_pass http://app;
        }""")
    resp = n.get("/app/", headers={"Accept": "text/html"})
    assert resp.status in (401, 403), resp
    assert resp.header("Location") is None
    resp = n.get("/app/", headers=cookie("sess_any"))
    assert resp.status in (401, 403), resp
    assert upstream.requests == []


def test_satisfy_any_with_auth_basic(nginx, rds, r, tmp_path):
    # another access module can grant what the session check refuses
    seed_session(r, "sess_ab", "user_ab")
    with open(str(tmp_path) + "/htpasswd", "w") as f:
        f.write("alice:{PLAIN}wonderland\n")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /app/ {
            satisfy any;
            auth_basic "area";
            auth_basic_user_file %s/htpasswd;
            session_check on;
            session_token cookie=sessionId;
            proxy_pass http://app;
        }""" % tmp_path)
    import base64
    basic = "Basic " + base64.b64encode(b"alice:wonderland").decode()
    assert n.get("/app/", headers={"Authorization": basic}).status == 200
    assert n.get("/app/", headers=cookie("sess_ab")).status == 200
    assert n.get("/app/").status == 401
    assert n.get("/app/", headers=cookie("sess_nope")).status == 401


def _lookups(r):
    stats = r.info("commandstats")
    return stats.get("cmdstat_hmget", {}).get("calls", 0)


def test_check_survives_internal_redirect_to_another_location(nginx, rds, r):
    # try_files / named locations clear every module's ctx: the check made in
    # the first location must still reach the upstream from the second, the
    # second location's own requirements must still apply, and Redis is not
    # asked twice.
    seed_session_v2(r, "sess_adm", "user_adm", role="admin")  # one HMGET per lookup
    seed_session(r, "sess_mem", "user_mem")
    seed_user(r, "user_mem", role="member")
    n = nginx(http=redis_directive(rds.address()), server="""
        location /to-admin/ {
            session_check on;
            session_token cookie=sessionId;
            try_files /no-such-file @admin;
        }
        location @admin {
            session_check on;
            session_token cookie=sessionId;
            session_require_role admin;
            %s
            proxy_pass http://app;
        }
        location /to-open/ {
            session_check on;
            session_token cookie=sessionId;
            try_files /no-such-file @open;
        }
        location @open {
            session_check off;
            %s
            proxy_pass http://app;
        }""" % (SESSION_HEADERS, SESSION_HEADERS))

    before = _lookups(r)
    resp = n.get("/to-admin/x", headers=cookie("sess_adm"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_adm"
    assert _lookups(r) == before + 1

    assert n.get("/to-admin/x", headers=cookie("sess_mem")).status == 403

    resp = n.get("/to-open/x", headers=cookie("sess_mem"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_mem"
    assert resp.upstream_header("X-Session-Status") == "ok"

    resp = n.get("/to-open/x", headers={"X-User-Id": "spoofed"})
    assert resp.status == 401, resp


def _curl_h2(port, path, *headers):
    args = ["curl", "-s", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version} %{http_code}",
            "--max-time", "10"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + ["http://127.0.0.1:%d%s" % (port, path)], capture_output=True,
                         text=True, timeout=20).stdout
    body, _, status = out.rpartition("\n")
    return status, body


def test_http2_requests_wait_for_redis_and_resume(nginx, rds, r):
    # On HTTP/2 the request runs on a stream's fake connection: the lookup
    # must resume it there as on HTTP/1.
    seed_session(r, "sess_h2", "user_h2")
    seed_user(r, "user_h2", role="admin")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"),
              listen_extra="http2")
    status, body = _curl_h2(n.port, "/app/", "Cookie: sessionId=sess_h2")
    assert status == "2 200", (status, body)
    assert '"user_h2"' in body, body
    status, _ = _curl_h2(n.port, "/app/", "Cookie: sessionId=sess_nope")
    assert status == "2 401", status
    status, _ = _curl_h2(n.port, "/app/")
    assert status == "2 401", status
