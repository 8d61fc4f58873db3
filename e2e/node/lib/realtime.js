'use strict';
// The real client libraries, wired to a local Confide: pusher-js (the browser/Node client) and
// pusher (the official server SDK), plus a tiny auth endpoint of the kind a customer's backend runs.

const http = require('node:http');
const PusherClient = require('pusher-js');
const PusherServer = require('pusher');
const WebSocket = require('ws');

// A browser sends the page's Origin with the WebSocket handshake; pusher-js in Node (faye-websocket
// underneath) sends none and has no option for it. To play a page on a given origin, the test
// registers that origin for an app key and the WebSocket is opened with an Origin header, exactly
// what the browser would send. Everything else stays pusher-js's own code.
const pageOrigins = new Map();
const runtime = PusherClient.Runtime;
const originalCreateWebSocket = runtime.createWebSocket;
runtime.createWebSocket = function createWebSocket(url) {
  const key = /\/app\/([^/?]+)/.exec(url)?.[1];
  const origin = key && pageOrigins.get(decodeURIComponent(key));
  if (!origin) return originalCreateWebSocket.call(this, url);
  const Client = this.getWebSocketAPI();
  return new Client(url, [], { headers: { Origin: origin } });
};

/** Rejects after `ms` with a message naming what was awaited. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the data of the next `event` on a pusher-js channel (or connection, or user). */
function next(emitter, event, what = event, ms = 10_000) {
  return within(
    new Promise((resolve) => {
      const handler = (data) => {
        emitter.unbind(event, handler);
        resolve(data);
      };
      emitter.bind(event, handler);
    }),
    ms,
    what,
  );
}

/** Collects every `event` on a pusher-js emitter into an array. */
function record(emitter, event) {
  const seen = [];
  emitter.bind(event, (data) => seen.push(data));
  return seen;
}

/** Resolves once `seen` holds at least `n` entries. */
async function until(seen, n, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (seen.length < n) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: have ${JSON.stringify(seen)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return seen;
}

/** Every pusher-js client created by a test, disconnected by `closeClients`. */
const clients = new Set();

/**
 * A pusher-js client for a Confide on `port`; `options` are merged into pusher-js's options.
 * `origin`: the page origin the WebSocket handshake carries.
 */
function client(key, port, options = {}, { origin } = {}) {
  if (origin) pageOrigins.set(key, origin);
  else pageOrigins.delete(key);
  const pusher = new PusherClient(key, {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'local',
    ...options,
  });
  clients.add(pusher);
  return pusher;
}

/** Waits until a pusher-js client is connected; fails on an earlier error or 'failed'. */
function connected(pusher, ms = 10_000) {
  if (pusher.connection.state === 'connected') return Promise.resolve(pusher);
  return within(
    new Promise((resolve, reject) => {
      const onState = ({ current }) => {
        if (current === 'connected') {
          pusher.connection.unbind('state_change', onState);
          resolve(pusher);
        } else if (current === 'failed' || current === 'disconnected') {
          reject(new Error(`pusher-js connection went ${current} instead of connected`));
        }
      };
      pusher.connection.bind('state_change', onState);
    }),
    ms,
    'the pusher-js connection',
  );
}

/** Subscribes and waits for pusher:subscription_succeeded; rejects on subscription_error. */
function subscribed(pusher, name, ms = 10_000) {
  const channel = pusher.subscribe(name);
  return within(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', () => resolve(channel));
      channel.bind('pusher:subscription_error', (err) =>
        reject(new Error(`subscription to ${name} failed: ${JSON.stringify(err)}`)),
      );
    }),
    ms,
    `subscription to ${name}`,
  );
}

function closeClients() {
  for (const pusher of clients) pusher.disconnect();
  clients.clear();
}

/** The official server SDK for the platform app of a Confide on `port`. */
function serverSdk(credentials, port, extra = {}) {
  return new PusherServer({
    appId: credentials.app_id,
    key: credentials.key,
    secret: credentials.secret,
    host: '127.0.0.1',
    port: String(port),
    useTLS: false,
    ...extra,
  });
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => resolve({ body, form: Object.fromEntries(new URLSearchParams(body)) }));
    req.on('error', reject);
  });
}

/**
 * A customer's backend: signs subscriptions and sign-ins with the official SDK.
 * - POST /auth: private channels; presence channels for the user named in X-User (info in X-User-Name)
 * - POST /user-auth: user sign-in for the user named in X-User
 * - POST /wrong-auth: answers with a signature made with the wrong secret
 * Records every request in `requests`.
 */
async function authServer(sdk, wrongSdk) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const { body, form } = await readForm(req);
    requests.push({ path: req.url, headers: req.headers, body, form });
    const user = req.headers['x-user'];
    let answer;
    try {
      if (req.url === '/auth') {
        answer = form.channel_name.startsWith('presence-')
          ? sdk.authorizeChannel(form.socket_id, form.channel_name, {
              user_id: user,
              user_info: { name: req.headers['x-user-name'] || user },
            })
          : sdk.authorizeChannel(form.socket_id, form.channel_name);
      } else if (req.url === '/user-auth') {
        answer = sdk.authenticateUser(form.socket_id, { id: user, user_info: { name: user } });
      } else if (req.url === '/wrong-auth') {
        answer = wrongSdk.authorizeChannel(form.socket_id, form.channel_name);
      } else if (req.url === '/wrong-user-auth') {
        answer = wrongSdk.authenticateUser(form.socket_id, { id: user });
      } else {
        res.writeHead(404).end();
        return;
      }
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/**
 * Opens a raw WebSocket (the `ws` package) and records frames until the server closes it.
 * Resolves with {frames, code, reason, opened}.
 */
function rawSocket(url, options = {}, ms = 10_000) {
  const frames = [];
  let opened = false;
  let upgradeStatus = null;
  const ws = new WebSocket(url, options);
  const done = new Promise((resolve) => {
    ws.on('open', () => {
      opened = true;
    });
    ws.on('message', (data) => {
      try {
        frames.push(JSON.parse(data.toString()));
      } catch {
        frames.push(data.toString());
      }
    });
    ws.on('unexpected-response', (_req, res) => {
      upgradeStatus = res.statusCode;
      resolve({ frames, code: null, reason: '', opened, upgradeStatus });
      ws.terminate();
    });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => resolve({ frames, code, reason: reason.toString(), opened, upgradeStatus }));
  });
  return {
    ws,
    closed: within(done, ms, `the server to close ${url}`).finally(() => ws.terminate()),
  };
}

/**
 * A raw protocol client (the `ws` package) that keeps every frame it receives:
 * {ws, frames, waitFor(predicate, what), send(event, data), closed}.
 */
function rawClient(url, options = {}) {
  const { ws, closed } = rawSocket(url, options, 30_000);
  const frames = [];
  ws.on('message', (raw) => {
    try {
      frames.push(JSON.parse(raw.toString()));
    } catch {
      frames.push(raw.toString());
    }
  });
  const waitFor = (predicate, what, ms = 10_000) =>
    within(
      new Promise((resolve) => {
        const check = () => {
          const hit = frames.find(predicate);
          if (hit) resolve(hit);
          else setTimeout(check, 10);
        };
        check();
      }),
      ms,
      `${what}; frames so far: ${JSON.stringify(frames)}`,
    );
  const send = (event, data) => ws.send(JSON.stringify({ event, data }));
  return { ws, frames, waitFor, send, closed };
}

/** The URL pusher-js 8 connects to. */
function appUrl(port, key) {
  return `ws://127.0.0.1:${port}/app/${key}?protocol=7&client=js&version=8.6.0&flash=false`;
}

module.exports = {
  rawClient,
  appUrl,
  PusherClient,
  PusherServer,
  within,
  next,
  record,
  until,
  client,
  connected,
  subscribed,
  closeClients,
  serverSdk,
  authServer,
  rawSocket,
};
