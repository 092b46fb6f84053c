#!/usr/bin/env python3
"""Writes signed session.created deliveries for bench/syncd/replay.lua: one
file per wrk thread, each request as "<length>\\n<raw HTTP request>".
Usage: gen_requests.py HOST:PORT PATH SECRET COUNT THREADS OUTDIR"""

import base64
import hashlib
import hmac
import json
import sys
import time
import uuid


def main():
    hostport, path, secret, count, threads, outdir = sys.argv[1:7]
    count, threads = int(count), int(threads)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    now_s = int(time.time())
    now_ms = now_s * 1000
    files = [open(f"{outdir}/requests.{t}", "wb") for t in range(threads)]
    for i in range(count):
        msg_id = f"msg_{uuid.uuid4().hex}"
        user = f"user_bench_{i % 1000}"
        body = json.dumps({
            "type": "session.created", "object": "event", "timestamp": now_ms,
            "instance_id": "ins_bench",
            "data": {"object": "session", "id": f"sess_{uuid.uuid4().hex}", "user_id": user,
                     "client_id": "client_bench", "status": "active",
                     "expire_at": now_ms + 7 * 86400_000, "abandon_at": now_ms + 30 * 86400_000,
                     "last_active_at": now_ms, "created_at": now_ms, "updated_at": now_ms},
        }, separators=(",", ":")).encode()
        signed = f"{msg_id}.{now_s}.".encode() + body
        sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        req = (f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\n"
               f"Content-Type: application/json\r\nsvix-id: {msg_id}\r\n"
               f"svix-timestamp: {now_s}\r\nsvix-signature: v1,{sig}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        out = files[i % threads]
        out.write(f"{len(req)}\n".encode())
        out.write(req)
    for f in files:
        f.close()


if __name__ == "__main__":
    main()
