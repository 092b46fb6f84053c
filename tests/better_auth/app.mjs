// A better-auth server as an application would run it, for
// tests/integration/test_better_auth.py: the real `better-auth` package,
// a memory database, and `secondaryStorage` on the test's redis-server.
//
//   REDIS_URL=redis://127.0.0.1:PORT BETTER_AUTH_SECRET=... node app.mjs
//
// Listens on 127.0.0.1 on a free port and prints `port <n>` once ready.
// better-auth's routes are at /api/auth/* (sign-up/email, sign-in/email,
// sign-out, get-session). One route for the tests only:
// POST /test/update-user {"userId", "data"} runs better-auth's own
// internalAdapter.updateUser (what the admin plugin's setRole and banUser
// do), which rewrites the user in every cached session of the user.
import http from "node:http";

import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { admin } from "better-auth/plugins";
import Redis from "ioredis";

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) {
  console.error("REDIS_URL is not set");
  process.exit(2);
}
const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
const db = { user: [], session: [], account: [], verification: [] };

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => resolve(body));
    req.on("error", reject);
  });
}

const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  // better-auth's documented secondaryStorage interface; ttl in seconds.
  const auth = betterAuth({
    baseURL: `http://127.0.0.1:${port}`,
    database: memoryAdapter(db),
    emailAndPassword: { enabled: true, autoSignIn: false },
    secondaryStorage: {
      get: async (key) => redis.get(key),
      set: async (key, value, ttl) => {
        if (ttl) await redis.set(key, value, "EX", ttl);
        else await redis.set(key, value);
      },
      delete: async (key) => {
        await redis.del(key);
      },
    },
    plugins: [admin()],
    logger: { level: "error" },
  });
  const handler = toNodeHandler(auth);
  server.on("request", async (req, res) => {
    try {
      if (req.method === "POST" && req.url === "/test/update-user") {
        const { userId, data } = JSON.parse(await readBody(req));
        const ctx = await auth.$context;
        const user = await ctx.internalAdapter.updateUser(userId, data);
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(user));
        return;
      }
      await handler(req, res);
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(err && err.stack ? err.stack : err));
    }
  });
  console.log(`port ${port}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    redis.disconnect();
    process.exit(0);
  });
}
