// A scripted stand-in for Confide's chat API and Pusher-protocol hub, for the protocol tests that
// need a server misbehaving on cue (close codes, silence instead of pongs). It follows the same
// wire format as Confide (chat API, protocol 7 frames, private-channel auth) and checks what the
// widget sends: the chat token header, the auth form, the subscription signature. Tests can hold
// the chat history's answer and new WebSocket handshakes, to act while the widget waits for them.
// Identity verification: `opts.identity = {accept, sub}` makes POST /chat/v1/identity accept that
// one JWT (the real server verifies signatures; here the widget's side of the exchange is tested)
// and swap the chat token for a new one; `opts.requireIdentity = {bot_message}` refuses unverified
// chats with 403 identity_required, as a bot with require_identity does.

import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { freePort, WIDGET_FILE } from './harness.mjs';

export { WIDGET_FILE };

export async function startMockHub({ botKey = 'mockbot_0123456789', activityTimeout = 120, allowedOrigin = null } = {}) {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const secret = randomBytes(16).toString('hex');
  const chats = new Map(); // token -> chat
  const log = []; // what happened, in order: {kind, ...}
  const connections = []; // {ws, socketId, openedAt, closedAt, frames: []}
  const opts = {
    activityTimeout, answerPings: true, greeting: 'Hello from the mock', fallback: 'A mock reply', identity: null, requireIdentity: null,
  };
  let seq = 0;
  // Gates the tests open: while one is set, the history answer / new handshakes wait for it.
  let historyGate = null;
  let upgradeGate = null;
  const heldUpgrades = [];
  const gate = () => {
    let open;
    const wait = new Promise((resolve) => (open = resolve));
    return { wait, open };
  };

  const cors = (req, res) => {
    res.setHeader('access-control-allow-origin', req.headers.origin || '*');
    res.setHeader('vary', 'origin');
  };
  const json = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const refuse = (res, status, code, message) => json(res, status, { error: { code, message } });
  const view = (m) => ({ id: m.id, sender: m.sender, text: m.text, created_at: new Date(m.at).toISOString() });

  const publish = (chat, message) => {
    const data = JSON.stringify(view(message));
    for (const c of connections) {
      if (c.ws.readyState === 1 && c.subscribed.has(chat.channel)) {
        c.ws.send(JSON.stringify({ event: 'message', channel: chat.channel, data }));
      }
    }
  };
  const postMessage = (chat, sender, text) => {
    const m = { id: randomUUID(), sender, text, at: Date.now() };
    chat.messages.push(m);
    publish(chat, m);
    return m;
  };

  const readBody = (req) => new Promise((resolve) => {
    let b = '';
    req.on('data', (c) => (b += c));
    req.on('end', () => resolve(b));
  });

  const nudgeReads = [];
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, origin);
    if (req.method === 'GET' && url.pathname === '/widget/v1/confide.js') {
      res.writeHead(200, {
        'content-type': 'text/javascript; charset=utf-8',
        'access-control-allow-origin': '*',
        'cross-origin-resource-policy': 'cross-origin',
      });
      res.end(readFileSync(WIDGET_FILE));
      return;
    }
    if (!url.pathname.startsWith('/chat/v1/')) {
      refuse(res, 404, 'not_found', 'no such resource');
      return;
    }
    cors(req, res);
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'access-control-allow-methods': 'GET, POST',
        'access-control-allow-headers': 'content-type, x-chat-token',
      });
      res.end();
      return;
    }
    const body = await readBody(req);
    // The page's nudge rules, read on load without a chat: kept apart from the chat requests.
    if (req.method === 'GET' && url.pathname === `/chat/v1/${botKey}/nudges`) {
      nudgeReads.push({ token: req.headers['x-chat-token'] ?? null });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ nudges: opts.nudges || [] }));
      return;
    }
    const token = req.headers['x-chat-token'];
    const chat = token ? chats.get(token) : null;
    const entry = { kind: 'http', method: req.method, path: url.pathname, token: !!token, chatToken: token ?? null, ct: req.headers['content-type'], body };
    log.push(entry);
    if (allowedOrigin && req.headers.origin !== allowedOrigin) {
      refuse(res, 403, 'origin_not_allowed', 'this page may not embed the bot');
      return;
    }
    const sessionMatch = url.pathname.match(/^\/chat\/v1\/([^/]+)\/sessions$/);
    if (sessionMatch) {
      if (sessionMatch[1] !== botKey) return refuse(res, 404, 'not_found', 'no such resource');
      if (opts.sessionRefusal) {
        const { status, headers = {}, error } = opts.sessionRefusal;
        for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
        return json(res, status, { error });
      }
      const request = JSON.parse(body || '{}');
      const id = randomUUID();
      const newToken = randomBytes(24).toString('base64url');
      const c = { id, channel: `private-chat-${id}`, messages: [], visitor: request.visitor_id || `v${++seq}` };
      chats.set(newToken, c);
      entry.issued = newToken;
      json(res, 201, {
        chat_id: id,
        channel: c.channel,
        token: newToken,
        expires_at: new Date(Date.now() + 3600e3).toISOString(),
        visitor_id: c.visitor,
        realtime: { app_key: botKey, host: '127.0.0.1', port, tls: false, auth_endpoint: `${origin}/chat/v1/auth` },
        identity_required: !!opts.requireIdentity,
      });
      return;
    }
    if (!chat) return refuse(res, 403, 'invalid_chat_token', 'the chat token is invalid or expired');
    if (url.pathname === '/chat/v1/identity' && req.method === 'POST') {
      if (!opts.identity) return refuse(res, 409, 'identity_not_configured', 'this bot does not verify visitors');
      const jwt = JSON.parse(body || '{}').token;
      if (jwt !== opts.identity.accept) {
        return refuse(res, 403, 'invalid_identity_token', 'the identity token is invalid or expired');
      }
      // The old token no longer opens the chat: a widget that kept it would fail from here on.
      const verifiedToken = randomBytes(24).toString('base64url');
      chats.delete(token);
      chats.set(verifiedToken, chat);
      chat.verified = opts.identity.sub;
      entry.issued = verifiedToken;
      json(res, 200, {
        token: verifiedToken, expires_at: new Date(Date.now() + 3600e3).toISOString(), user_id: chat.verified, verified: true,
      });
      return;
    }
    if (opts.requireIdentity && !chat.verified) {
      return json(res, 403, {
        error: { code: 'identity_required', message: 'this chat is for signed-in visitors only', ...opts.requireIdentity },
      });
    }
    if (url.pathname === '/chat/v1/auth') {
      if (!/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] || '')) {
        return refuse(res, 415, 'unsupported_media_type', 'the body must be a form');
      }
      const form = new URLSearchParams(body);
      if (form.get('channel_name') !== chat.channel) return refuse(res, 403, 'channel_mismatch', 'another channel');
      const sig = createHmac('sha256', secret).update(`${form.get('socket_id')}:${chat.channel}`).digest('hex');
      json(res, 200, { auth: `${botKey}:${sig}` });
      return;
    }
    if (url.pathname === '/chat/v1/greeting') {
      const m = postMessage(chat, 'bot', opts.greeting);
      json(res, 202, { message: view(m), reply: null });
      return;
    }
    if (url.pathname === '/chat/v1/messages' && req.method === 'GET') {
      // What is stored when the gate opens: messages published while it was closed are in it too.
      if (historyGate) await historyGate.wait;
      json(res, 200, { messages: chat.messages.map(view) });
      return;
    }
    if (url.pathname === '/chat/v1/messages') {
      const { text } = JSON.parse(body || '{}');
      const m = postMessage(chat, 'visitor', String(text).trim());
      const r = postMessage(chat, 'bot', opts.fallback);
      json(res, 202, { message: view(m), reply: view(r) });
      return;
    }
    refuse(res, 404, 'not_found', 'no such resource');
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', async (req, socket, head) => {
    const url = new URL(req.url, origin);
    if (url.pathname !== `/app/${botKey}` || url.searchParams.get('protocol') !== '7') {
      socket.destroy();
      return;
    }
    if (upgradeGate) {
      heldUpgrades.push(req.url);
      await upgradeGate.wait;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = {
        ws,
        socketId: `${1000 + connections.length}.${Math.floor(Math.random() * 1e6)}`,
        openedAt: Date.now(),
        closedAt: null,
        query: Object.fromEntries(url.searchParams),
        frames: [],
        subscribed: new Set(),
      };
      connections.push(conn);
      ws.on('close', () => (conn.closedAt = Date.now()));
      ws.on('message', (raw) => {
        const f = JSON.parse(String(raw));
        conn.frames.push({ at: Date.now(), ...f });
        if (f.event === 'pusher:ping') {
          if (opts.answerPings) ws.send(JSON.stringify({ event: 'pusher:pong', data: {} }));
        } else if (f.event === 'pusher:subscribe') {
          const channel = f.data?.channel;
          const expected = `${botKey}:${createHmac('sha256', secret).update(`${conn.socketId}:${channel}`).digest('hex')}`;
          if (f.data?.auth !== expected) {
            ws.send(JSON.stringify({
              event: 'pusher:subscription_error',
              channel,
              data: JSON.stringify({ type: 'AuthError', error: 'bad signature', status: 401 }),
            }));
            return;
          }
          conn.subscribed.add(channel);
          ws.send(JSON.stringify({ event: 'pusher_internal:subscription_succeeded', channel, data: '{}' }));
        }
      });
      ws.send(JSON.stringify({
        event: 'pusher:connection_established',
        data: JSON.stringify({ socket_id: conn.socketId, activity_timeout: opts.activityTimeout }),
      }));
    });
  });

  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: origin,
    port,
    botKey,
    opts,
    log,
    nudgeReads,
    connections,
    chats,
    /** The last connection that is still open. */
    live: () => connections.filter((c) => c.ws.readyState === 1).at(-1),
    /** Closes every open connection the way the hub would: pusher:error, then the close code. */
    closeAll(code, message = 'closing') {
      for (const c of connections) {
        if (c.ws.readyState !== 1) continue;
        c.ws.send(JSON.stringify({ event: 'pusher:error', data: { code, message } }));
        c.ws.close(code, message);
      }
    },
    /** Holds the answers to GET /chat/v1/messages until the returned function is called. */
    holdHistory() {
      const g = gate();
      historyGate = g;
      return () => {
        if (historyGate === g) historyGate = null;
        g.open();
      };
    },
    /** Holds new WebSocket handshakes (the hub is unreachable) until the returned function is called. */
    holdConnections() {
      const g = gate();
      upgradeGate = g;
      return () => {
        if (upgradeGate === g) upgradeGate = null;
        g.open();
      };
    },
    /** The handshakes waiting for holdConnections' release. */
    heldUpgrades,
    /** Forgets every chat token, as if they had all expired. */
    expireTokens() {
      chats.clear();
    },
    /** Sends a bot message to every chat (as the bot's reply through the hub would). */
    pushToAll(text) {
      for (const chat of chats.values()) postMessage(chat, 'bot', text);
    },
    close: () => new Promise((resolve) => {
      for (const c of connections) c.ws.terminate();
      wss.close();
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}
