'use strict';
// The comparison point for `make bench`: what users of nginx + Node.js run
// today to check Redis-backed sessions. nginx's `auth_request /auth` sends
// every request's headers here; this service reads the session the way the
// module does (docs/redis-contract.md) and answers 204 (with X-User-Id, which
// nginx picks up with auth_request_set) or 401.
//
// Usage: node auth.js --port PORT --redis-port PORT [--redis-host HOST]
//                     [--port-file FILE]
// --port 0 listens on a free port; --port-file then receives the port.

const http = require('http');
const fs = require('fs');
const Redis = require('ioredis');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const port = Number(arg('port', '0'));
const redisHost = arg('redis-host', '127.0.0.1');
const redisPort = Number(arg('redis-port', '6379'));
const portFile = arg('port-file', '');

const redis = new Redis({ host: redisHost, port: redisPort, lazyConnect: false,
                          enableOfflineQueue: true, maxRetriesPerRequest: 1 });
redis.on('error', (e) => console.error('redis:', e.message));

// The token: the `sessionId` cookie, else `Authorization: Bearer <token>`,
// like `session_token cookie=sessionId bearer`.
function token(req) {
  const cookie = req.headers.cookie;
  if (cookie) {
    for (const part of cookie.split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0) continue;
      if (part.slice(0, eq).trim() === 'sessionId') {
        const v = part.slice(eq + 1).trim();
        if (v) return v;
      }
    }
  }
  const auth = req.headers.authorization;
  if (auth && auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ') {
    return auth.slice(7).trim() || null;
  }
  return null;
}

async function check(id) {
  const [userId, expiresAt, status] =
      await redis.hmget('sess:' + id, 'user_id', 'expires_at', 'status');
  if (!userId || expiresAt === null || !/^[0-9]+$/.test(expiresAt)) return null;
  if (Number(expiresAt) <= Date.now()) return null;
  if (status !== null && status !== 'active') return null;
  const [userStatus, role] = await redis.hmget('user:' + userId, 'status', 'role');
  if (userStatus !== null && userStatus !== 'active') return null;
  return { userId, role };
}

const server = http.createServer(async (req, res) => {
  try {
    const id = token(req);
    const s = id ? await check(id) : null;
    if (s) {
      res.writeHead(204, { 'X-User-Id': s.userId, 'X-User-Role': s.role || '' });
    } else {
      res.writeHead(401);
    }
  } catch (e) {
    res.writeHead(500);
  }
  res.end();
});
server.keepAliveTimeout = 75000;
server.headersTimeout = 76000;

server.listen(port, '127.0.0.1', () => {
  const p = server.address().port;
  if (portFile) fs.writeFileSync(portFile, String(p));
  console.log('auth listening on 127.0.0.1:' + p);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.close(); redis.disconnect(); process.exit(0); });
}
