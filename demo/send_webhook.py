#!/usr/bin/python3
"""Sends one Clerk-shaped webhook to syncd, signed the way Svix signs it
(/work/shared/reference/webhooks.md: HMAC-SHA256 over "id.timestamp.body",
keyed with the base64-decoded whsec_ secret). Standard library only.

    demo/send_webhook.py user.created --user USER_ID [--role ROLE] [--email EMAIL]
    demo/send_webhook.py session.created --session SESSION_ID --user USER_ID
    demo/send_webhook.py session.revoked --session SESSION_ID --user USER_ID
    demo/send_webhook.py organizationMembership.created --membership ID --user USER_ID
        --org-id ORG_ID --org-slug SLUG --org-role org:ROLE [--permission PERM ...]
        [--url http://127.0.0.1:8787/webhooks/clerk]
        [--secret-file build/demo/webhook-secret]

Prints syncd's answer ("-> 200 {...}") and exits 0 only for a 2xx.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_URL = "http://127.0.0.1:8787/webhooks/clerk"
DEFAULT_SECRET_FILE = os.path.join(ROOT, "build", "demo", "webhook-secret")
SESSION_STATUS = {"session.created": "active", "session.ended": "ended",
                  "session.removed": "removed", "session.revoked": "revoked"}


def sign(secret, msg_id, timestamp, body):
    """The v1 signature: base64(HMAC-SHA256(key, b"{id}.{timestamp}." + body))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def now_ms():
    return int(time.time() * 1000)


def user_data(user_id, role, email):
    t = now_ms()
    return {
        "object": "user", "id": user_id, "first_name": "Demo", "last_name": "User",
        "username": None, "image_url": "https://img.clerk.com/demo.png",
        "primary_email_address_id": "idn_demo",
        "email_addresses": [{"id": "idn_demo", "email_address": email,
                             "verification": {"status": "verified"}}],
        "public_metadata": {"role": role} if role else {},
        "private_metadata": None, "banned": False, "locked": False,
        "created_at": t - 1000, "updated_at": t,
    }


def session_data(session_id, user_id, status):
    t = now_ms()
    return {
        "object": "session", "id": session_id, "user_id": user_id, "client_id": "client_demo",
        "status": status, "expire_at": t + 3600_000, "abandon_at": t + 7 * 24 * 3600_000,
        "last_active_at": t, "created_at": t - 1000, "updated_at": t,
    }


def membership_data(membership_id, user_id, org_id, slug, role, permissions):
    t = now_ms()
    return {
        "object": "organization_membership", "id": membership_id, "role": role,
        "permissions": list(permissions),
        "organization": {"object": "organization", "id": org_id, "slug": slug,
                         "name": slug.title()},
        "public_user_data": {"user_id": user_id, "identifier": "demo@example.com",
                             "first_name": "Demo", "last_name": "User"},
        "public_metadata": {}, "private_metadata": {},
        "created_at": t - 1000, "updated_at": t,
    }


MEMBERSHIP_TYPES = ["organizationMembership.created", "organizationMembership.updated",
                    "organizationMembership.deleted"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("type", choices=["user.created", "user.updated"] + list(SESSION_STATUS)
                   + MEMBERSHIP_TYPES)
    p.add_argument("--user", required=True, help="the user's id (user_...)")
    p.add_argument("--session", help="the session's id (sess_...), for session.*")
    p.add_argument("--role", help="public_metadata.role, for user.*")
    p.add_argument("--email", default="demo@example.com")
    p.add_argument("--membership", help="the membership's id (orgmem_...), for organizationMembership.*")
    p.add_argument("--org-id", help="the organization's id (org_...)")
    p.add_argument("--org-slug", help="the organization's slug")
    p.add_argument("--org-role", default="org:member", help="the member's role (org:admin, ...)")
    p.add_argument("--permission", action="append", default=[],
                   help="a permission the role grants (org:billing:manage); repeat")
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--secret-file", default=DEFAULT_SECRET_FILE)
    args = p.parse_args()

    if args.type.startswith("session."):
        if not args.session:
            p.error(f"{args.type} needs --session")
        data = session_data(args.session, args.user, SESSION_STATUS[args.type])
    elif args.type.startswith("organizationMembership."):
        if not (args.membership and args.org_id and args.org_slug):
            p.error(f"{args.type} needs --membership, --org-id and --org-slug")
        data = membership_data(args.membership, args.user, args.org_id, args.org_slug,
                               args.org_role, args.permission)
    else:
        data = user_data(args.user, args.role, args.email)

    with open(args.secret_file) as f:
        secret = f.read().split()[0]
    body = json.dumps({"data": data, "object": "event", "type": args.type,
                       "timestamp": now_ms(), "instance_id": "ins_demo"}).encode()
    msg_id = "msg_" + uuid.uuid4().hex
    timestamp = str(int(time.time()))
    request = urllib.request.Request(args.url, data=body, method="POST", headers={
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": sign(secret, msg_id, timestamp, body),
    })
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, text = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    except OSError as e:
        print(f"  -> no answer from {args.url}: {e}")
        return 1
    print(f"  -> {status} {text.strip()}   (svix-id {msg_id})")
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
