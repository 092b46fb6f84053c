"""A local stand-in for Clerk's Backend API, started by the tests on
127.0.0.1 (port chosen at run time). It follows the shapes Clerk documents
(clerk/javascript packages/backend/src/api/endpoints, clerk.com/docs
reference/backend):

  GET  /v1/users?limit&offset&order_by           bare JSON array (limit 1..500)
  GET  /v1/users/count                           {"object":"total_count","total_count":N}
  GET  /v1/users/{id}                            user object
  PATCH /v1/users/{id}/metadata                  deep merge of public/private/unsafe
                                                 metadata (null deletes a key); answers
                                                 the user object
  GET  /v1/organizations?limit&offset&order_by   {"data":[...],"total_count":N}
  GET  /v1/organization_memberships?limit&offset&order_by   instance-wide, same envelope
  GET  /v1/organizations/{id}/memberships?limit&offset      same envelope
  GET  /v1/sessions?user_id|client_id&status&limit&offset[&paginated=true]
                                                 a filter is required (400 without);
                                                 bare array, or the envelope with
                                                 paginated=true
  GET  /v1/jwks                                  the JWKS set with set_jwks()

Every request needs `Authorization: Bearer <secret>` (401 otherwise), and is
recorded in `requests` (method, path, query, parsed JSON body, monotonic
time, status answered); the Authorization header itself is never recorded.
Failures are injected from the test: fail_next(n, status, retry_after=...),
fail_after(n_ok, ...) (every later matching request fails, or its connection
is dropped), and clear_failures().

Objects are stored in the JSON shape of the webhook payloads
(/work/shared/reference/webhooks.md); the helpers make_user, make_org,
make_membership and make_session fill in plausible values.
"""

import copy
import itertools
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_SECRET = "sk_test_standin_0123456789abcdef"
MAX_LIMIT = 500  # Clerk: "greater than zero and less than 501"

_counter = itertools.count(1)


def _now_ms():
    return int(time.time() * 1000)


def make_user(user_id=None, *, email=None, first="Ada", last="Lovelace", role=None,
              public_metadata=None, banned=False, created_at=None, updated_at=None):
    n = next(_counter)
    user_id = user_id or f"user_standin{n:08d}"
    t = updated_at or _now_ms()
    meta = dict(public_metadata or {})
    if role is not None:
        meta["role"] = role
    email = email or f"{user_id}@example.com"
    return {
        "object": "user", "id": user_id, "first_name": first, "last_name": last,
        "username": None, "image_url": "https://img.clerk.com/standin.png",
        "has_image": False, "primary_email_address_id": f"idn_{user_id}",
        "primary_phone_number_id": None, "primary_web3_wallet_id": None,
        "email_addresses": [{"id": f"idn_{user_id}", "object": "email_address",
                             "email_address": email,
                             "verification": {"status": "verified", "strategy": "email_code"},
                             "linked_to": []}],
        "phone_numbers": [], "web3_wallets": [], "external_accounts": [],
        "public_metadata": meta, "private_metadata": {}, "unsafe_metadata": {},
        "external_id": None, "banned": banned, "locked": False,
        "created_at": created_at if created_at is not None else t - 1000,
        "updated_at": t, "last_sign_in_at": None, "last_active_at": None,
    }


def make_org(org_id=None, *, slug=None, name=None, created_at=None, updated_at=None):
    n = next(_counter)
    org_id = org_id or f"org_standin{n:08d}"
    slug = slug or org_id.replace("_", "-")
    t = updated_at or _now_ms()
    return {
        "object": "organization", "id": org_id, "name": name or slug.title(), "slug": slug,
        "image_url": "", "has_image": False, "members_count": None,
        "max_allowed_memberships": 0, "admin_delete_enabled": True,
        "public_metadata": {}, "private_metadata": {}, "created_by": "",
        "created_at": created_at if created_at is not None else t - 1000, "updated_at": t,
    }


def make_membership(org, user_id, *, mem_id=None, role="org:member", permissions=None,
                    created_at=None, updated_at=None):
    n = next(_counter)
    t = updated_at or _now_ms()
    return {
        "object": "organization_membership", "id": mem_id or f"orgmem_standin{n:08d}",
        "role": role, "role_name": role.split(":")[-1].title(),
        "permissions": list(permissions or ["org:sys_memberships:read"]),
        "public_metadata": {}, "private_metadata": {},
        "organization": {k: org[k] for k in ("object", "id", "name", "slug", "image_url",
                                             "created_at", "updated_at")},
        "public_user_data": {"user_id": user_id, "identifier": f"{user_id}@example.com",
                             "first_name": "Ada", "last_name": "Lovelace",
                             "image_url": "", "has_image": False},
        "created_at": created_at if created_at is not None else t - 1000, "updated_at": t,
    }


def make_session(user_id, *, session_id=None, status="active", client_id=None,
                 expire_in_ms=7 * 24 * 3600_000, created_at=None, updated_at=None):
    n = next(_counter)
    t = updated_at or _now_ms()
    return {
        "object": "session", "id": session_id or f"sess_standin{n:08d}",
        "user_id": user_id, "client_id": client_id or f"client_standin{n:08d}",
        "status": status, "expire_at": _now_ms() + expire_in_ms,
        "abandon_at": _now_ms() + 4 * expire_in_ms, "last_active_at": t,
        "last_active_organization_id": None, "actor": None,
        "latest_activity": {"ip_address": "192.0.2.7", "city": "London"},
        "created_at": created_at if created_at is not None else t - 1000, "updated_at": t,
    }


def _deep_merge(target, patch):
    """Clerk's metadata merge: objects merge recursively, a null deletes
    the key, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class Request:
    def __init__(self, method, path, query, body, t):
        self.method = method
        self.path = path          # without the query string
        self.query = query        # {name: value} (last value wins)
        self.body = body          # parsed JSON or None
        self.time = t             # time.monotonic() when it arrived
        self.status = None        # what the stand-in answered (None: dropped)

    def __repr__(self):
        return f"<{self.method} {self.path} {self.query} -> {self.status}>"


class _Failure:
    def __init__(self, status, retry_after, method, path_prefix, count, after, drop):
        self.status = status
        self.retry_after = retry_after
        self.method = method
        self.path_prefix = path_prefix
        self.count = count        # None: forever
        self.after = after        # matching requests to let through first
        self.drop = drop          # close the connection without answering

    def matches(self, method, path):
        return ((self.method is None or self.method == method)
                and (self.path_prefix is None or path.startswith(self.path_prefix)))


class ClerkBackendStandin:
    def __init__(self, secret=DEFAULT_SECRET):
        self.secret = secret
        self.lock = threading.Lock()
        self.users = {}
        self.orgs = {}
        self.memberships = {}
        self.sessions = {}
        self.jwks = {"keys": []}
        self.requests = []
        self._failures = []
        # Called (outside the lock) with a copy of the user after each
        # successful metadata PATCH: a test can deliver the user.updated
        # webhook Clerk would send.
        self.on_user_updated = None
        self._server = None
        self._thread = None

    # --- lifecycle -------------------------------------------------------
    def start(self):
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        """The value for SYNCD_CLERK_API_URL."""
        return f"http://127.0.0.1:{self.port}"

    # --- data ------------------------------------------------------------
    def add_user(self, user=None, **kwargs):
        user = user or make_user(**kwargs)
        with self.lock:
            self.users[user["id"]] = copy.deepcopy(user)
        return user

    def add_users(self, n, start_ms=None, **kwargs):
        """n users with distinct, increasing created_at (1 ms apart)."""
        base = start_ms or (_now_ms() - 10_000_000)
        out = [make_user(created_at=base + i, updated_at=base + i + 500, **kwargs)
               for i in range(n)]
        with self.lock:
            for u in out:
                self.users[u["id"]] = copy.deepcopy(u)
        return out

    def update_user(self, user_id, updated_at=None, **fields):
        """Changes top-level fields and bumps updated_at; returns a copy."""
        with self.lock:
            u = self.users[user_id]
            u.update(copy.deepcopy(fields))
            u["updated_at"] = updated_at or max(_now_ms(), u["updated_at"] + 1)
            return copy.deepcopy(u)

    def delete_user(self, user_id):
        with self.lock:
            self.users.pop(user_id, None)
            for sid in [s for s, v in self.sessions.items() if v["user_id"] == user_id]:
                del self.sessions[sid]
            for mid in [m for m, v in self.memberships.items()
                        if v["public_user_data"]["user_id"] == user_id]:
                del self.memberships[mid]

    def get_user(self, user_id):
        with self.lock:
            u = self.users.get(user_id)
            return copy.deepcopy(u) if u else None

    def add_org(self, org=None, **kwargs):
        org = org or make_org(**kwargs)
        with self.lock:
            self.orgs[org["id"]] = copy.deepcopy(org)
        return org

    def add_membership(self, org, user_id, **kwargs):
        m = make_membership(org, user_id, **kwargs)
        with self.lock:
            self.memberships[m["id"]] = copy.deepcopy(m)
        return m

    def add_session(self, user_id, **kwargs):
        s = make_session(user_id, **kwargs)
        with self.lock:
            self.sessions[s["id"]] = copy.deepcopy(s)
        return s

    def set_jwks(self, jwks):
        """The set GET /v1/jwks answers: a dict ({"keys": [...]}) or a
        list of JWKs, or bytes served as they are (a broken answer)."""
        with self.lock:
            self.jwks = {"keys": list(jwks)} if isinstance(jwks, list) else copy.deepcopy(jwks)

    # --- failures --------------------------------------------------------
    def fail_next(self, n, status=503, retry_after=None, method=None, path_prefix=None,
                  drop=False):
        """The next n matching requests are answered `status` (with a
        Retry-After header when given: seconds as a string, or an HTTP-date)
        or, with drop=True, their connection is closed unanswered."""
        with self.lock:
            self._failures.append(_Failure(status, retry_after, method, path_prefix, n, 0, drop))

    def fail_after(self, n_ok, status=500, method=None, path_prefix=None, drop=False):
        """Lets n_ok matching requests through, then fails every later one
        (an interruption that lasts until clear_failures())."""
        with self.lock:
            self._failures.append(_Failure(status, None, method, path_prefix, None, n_ok, drop))

    def clear_failures(self):
        with self.lock:
            self._failures = []

    def _take_failure(self, method, path):
        with self.lock:
            for f in self._failures:
                if not f.matches(method, path):
                    continue
                if f.after > 0:
                    f.after -= 1
                    continue
                if f.count is not None:
                    if f.count <= 0:
                        continue
                    f.count -= 1
                return f
        return None

    # --- what was received -----------------------------------------------
    def requests_to(self, path_prefix, method=None):
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)
                    and (method is None or r.method == method)]

    @property
    def patches(self):
        return self.requests_to("/v1/", method="PATCH")

    def clear_requests(self):
        with self.lock:
            self.requests = []


def _page(items, query, sort_default="-created_at"):
    """Sorts and slices like Clerk: order_by [+|-]field, limit 1..500,
    offset >= 0. Returns (page, total) or raises ValueError."""
    limit = int(query.get("limit", "10"))
    offset = int(query.get("offset", "0"))
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ValueError("limit or offset out of range")
    order = query.get("order_by", sort_default)
    desc = order.startswith("-")
    field = order.lstrip("+-")
    if field not in ("created_at", "updated_at"):
        raise ValueError("order_by")
    items = sorted(items, key=lambda o: (o[field], o["id"]), reverse=desc)
    return items[offset:offset + limit], len(items)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Clerk's API
    # Headers and body go out in two writes: with Nagle's algorithm on, the
    # second waits for the client's delayed ACK (40 ms per request).
    disable_nagle_algorithm = True
    owner = None

    def log_message(self, *args):
        pass

    def _send(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self._record.status = status  # before the client can see the answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status, code, message, headers=None):
        self._send(status, {"errors": [{"message": message, "long_message": message,
                                        "code": code}],
                            "clerk_trace_id": "standin"}, headers)

    def _handle(self, method):
        st = self.owner
        url = urllib.parse.urlsplit(self.path)
        # parse_qsl decodes '+' as a space, as a real server does: a client
        # must send order_by=%2Bcreated_at.
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self._record = Request(method, url.path, query, body, time.monotonic())
        with st.lock:
            st.requests.append(self._record)

        if self.headers.get("Authorization") != f"Bearer {st.secret}":
            return self._error(401, "authentication_invalid", "Invalid authentication")
        failure = st._take_failure(method, url.path)
        if failure:
            if failure.drop:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            code = "too_many_requests" if failure.status == 429 else "internal_error"
            return self._error(failure.status, code, "injected failure", headers)
        try:
            self._route(method, url.path, query, body)
        except ValueError as e:
            self._error(422, "form_param_value_invalid", str(e))

    def _route(self, method, path, query, body):
        st = self.owner
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/v1/users":
            with st.lock:
                page, _ = _page(list(st.users.values()), query)
                return self._send(200, copy.deepcopy(page))
        if method == "GET" and path == "/v1/users/count":
            with st.lock:
                return self._send(200, {"object": "total_count", "total_count": len(st.users)})
        if len(parts) == 3 and parts[:2] == ["v1", "users"] and method == "GET":
            with st.lock:
                u = st.users.get(parts[2])
                if not u:
                    return self._error(404, "resource_not_found", "not found")
                return self._send(200, copy.deepcopy(u))
        if (len(parts) == 4 and parts[:2] == ["v1", "users"] and parts[3] == "metadata"
                and method == "PATCH"):
            if not isinstance(body, dict):
                return self._error(400, "request_body_invalid", "body is not a JSON object")
            with st.lock:
                u = st.users.get(parts[2])
                if not u:
                    return self._error(404, "resource_not_found", "not found")
                for key in ("public_metadata", "private_metadata", "unsafe_metadata"):
                    if isinstance(body.get(key), dict):
                        if not isinstance(u.get(key), dict):
                            u[key] = {}
                        _deep_merge(u[key], body[key])
                u["updated_at"] = max(_now_ms(), u["updated_at"] + 1)
                answer = copy.deepcopy(u)
            self._send(200, answer)
            if st.on_user_updated:
                st.on_user_updated(copy.deepcopy(answer))
            return
        if method == "GET" and path == "/v1/organizations":
            with st.lock:
                page, total = _page(list(st.orgs.values()), query)
                return self._send(200, {"data": copy.deepcopy(page), "total_count": total})
        if method == "GET" and path == "/v1/organization_memberships":
            with st.lock:
                page, total = _page(list(st.memberships.values()), query)
                return self._send(200, {"data": copy.deepcopy(page), "total_count": total})
        if (method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "organizations"]
                and parts[3] == "memberships"):
            with st.lock:
                mine = [m for m in st.memberships.values()
                        if m["organization"]["id"] == parts[2]]
                page, total = _page(mine, query)
                return self._send(200, {"data": copy.deepcopy(page), "total_count": total})
        if method == "GET" and path == "/v1/sessions":
            user_id, client_id = query.get("user_id"), query.get("client_id")
            if not user_id and not client_id:
                return self._error(400, "form_param_missing",
                                   "one of user_id or client_id is required")
            with st.lock:
                mine = [s for s in st.sessions.values()
                        if (not user_id or s["user_id"] == user_id)
                        and (not client_id or s["client_id"] == client_id)
                        and (not query.get("status") or s["status"] == query["status"])]
                page, total = _page(mine, query)
                page = copy.deepcopy(page)
            if query.get("paginated") == "true":
                return self._send(200, {"data": page, "total_count": total})
            return self._send(200, page)
        if method == "GET" and path == "/v1/jwks":
            with st.lock:
                jwks = copy.deepcopy(st.jwks)
            if isinstance(jwks, bytes):  # set_jwks(b"..."): those bytes, as they are
                self._record.status = 200
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)
                return
            return self._send(200, jwks)
        return self._error(404, "resource_not_found", f"no route for {method} {path}")

    def do_GET(self):
        self._handle("GET")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")
