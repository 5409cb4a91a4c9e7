// websocket-push's documented behaviour (PROTOCOLS.md; webstack-micro's services/websocket-push),
// on Node's `ws` + the npm `redis` client, written as the anchor for bench/push.sh. Like the
// original: identity from x-auth-user / x-auth-guest, a {"tabWindowId"} welcome, joinRoom /
// leaveRoom, BackgroundPush / AuthEvent on Redis PubSub, a ping every 22 s. Unlike it, ids are
// kept in Maps (no prototype crashes) and pushes are not skipped while a ping is outstanding, so
// that both servers deliver the same messages.
// Usage: PORT=… REDIS_URL=redis://… node server.mjs
import { WebSocketServer } from "ws";
import { createClient } from "redis";

const port = Number(process.env.PORT || 8080);
const users = new Map(); // id -> Set<socket>
const rooms = new Map(); // room -> Set<socket>
const add = (m, k, ws) => (m.get(k) || m.set(k, new Set()).get(k)).add(ws);
const del = (m, k, ws) => {
  const s = m.get(k);
  if (s) { s.delete(ws); if (s.size === 0) m.delete(k); }
};

const wss = new WebSocketServer({ port, host: "127.0.0.1" });
wss.on("connection", (ws, req) => {
  ws.userId = req.headers["x-auth-user"] || req.headers["x-auth-guest"] || null;
  ws.tabWindowId = Math.random().toString(36).substr(2, 11);
  ws.rooms = new Set();
  ws.alive = true;
  if (ws.userId) add(users, ws.userId, ws);
  ws.send(JSON.stringify({ tabWindowId: ws.tabWindowId }));
  ws.on("pong", () => { ws.alive = true; });
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    let m;
    try { m = JSON.parse(data.toString()); } catch { return; }
    if (!m || typeof m !== "object") return;
    if (typeof m.joinRoom === "string") {
      if (m.joinRoom) { ws.rooms.add(m.joinRoom); add(rooms, m.joinRoom, ws); }
    } else if (typeof m.leaveRoom === "string" && m.leaveRoom) {
      ws.rooms.delete(m.leaveRoom); del(rooms, m.leaveRoom, ws);
    }
  });
  ws.on("close", () => {
    if (ws.userId) del(users, ws.userId, ws);
    for (const r of ws.rooms) del(rooms, r, ws);
  });
});

setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.alive) { ws.terminate(); continue; }
    ws.alive = false;
    ws.ping();
  }
}, 22000);

const sub = createClient({ url: process.env.REDIS_URL });
await sub.connect();
await sub.subscribe("BackgroundPush", (message) => {
  let m;
  try { m = JSON.parse(message); } catch { return; }
  if (!m || !m.payload) return;
  const targets = m.pushToUser ? users.get(String(m.pushToUser)) : m.pushToRoom ? rooms.get(m.pushToRoom) : null;
  if (!targets) return;
  const text = JSON.stringify(m.payload);
  for (const ws of targets) {
    if (m.tabWindowId && ws.tabWindowId !== m.tabWindowId) continue;
    ws.send(text);
  }
});
await sub.subscribe("AuthEvent", (message) => {
  let m;
  try { m = JSON.parse(message); } catch { return; }
  if (!m || !m.guestId || !m.authUserId) return;
  for (const ws of users.get(m.guestId) || []) add(users, m.authUserId, ws);
});
console.log(`listening ${port}`);
