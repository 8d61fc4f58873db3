'use strict';
// The chat widget's flow (seed 000) with the real pusher-js: start a chat, authorize its private
// channel with the chat token, receive the bot's greeting and replies over the channel; and the
// refusals: tampered tokens, other chats' channels, client events, pages on origins the bot does
// not allow (at session creation and at the WebSocket handshake).

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');

const { backends, startConfide } = require('../lib/confide');
const {
  within,
  next,
  record,
  until,
  client,
  connected,
  subscribed,
  closeClients,
  rawSocket,
  rawClient,
  appUrl,
} = require('../lib/realtime');

const SHOP_ORIGIN = 'https://shop.example.com';
const EVIL_ORIGIN = 'https://evil.example.net';

/** Flips one character in the middle of the token's ciphertext. */
function tamper(token) {
  const i = Math.floor(token.length * 0.6);
  const c = token[i] === 'A' ? 'B' : 'A';
  return token.slice(0, i) + c + token.slice(i + 1);
}

/** pusher-js channel authorization done with fetch, so the request can carry the page's Origin
 * (pusher-js's Node XHR refuses to set Origin, which a browser always sends). */
function fetchAuthorizer(endpoint, token, origin) {
  return {
    customHandler: ({ socketId, channelName }, callback) => {
      const headers = { 'content-type': 'application/x-www-form-urlencoded', 'X-Chat-Token': token };
      if (origin) headers.origin = origin;
      fetch(endpoint, {
        method: 'POST',
        headers,
        body: new URLSearchParams({ socket_id: socketId, channel_name: channelName }).toString(),
      })
        .then(async (res) => {
          const text = await res.text();
          if (res.status !== 200) callback(new Error(`auth endpoint answered ${res.status}: ${text}`), null);
          else callback(null, JSON.parse(text));
        })
        .catch((err) => callback(err, null));
    },
  };
}

for (const backend of backends()) {
  describe(`chat flow over the Pusher protocol with pusher-js (${backend})`, () => {
    let confide;
    let owner;
    let shopBot; // allowed_domains: shop.example.com
    let openBot; // any page

    const test = (name, fn) =>
      it(name, { timeout: 30_000 }, async (t) => {
        try {
          await fn(t);
        } catch (err) {
          err.message += `\n--- confide serve log (tail) ---\n${confide ? confide.logTail(40) : '(not started)'}`;
          throw err;
        }
      });

    /** POST /chat/v1/{key}/sessions as a page on `origin`. */
    const startChat = (bot, origin) =>
      confide.api('POST', `/chat/v1/${bot.key}/sessions`, { body: {}, headers: origin ? { origin } : {} });

    const chatPost = (pathname, token, origin, body) =>
      confide.api('POST', pathname, {
        body,
        headers: { 'X-Chat-Token': token, ...(origin ? { origin } : {}) },
      });

    before(async () => {
      confide = await startConfide(backend);
      owner = await confide.owner();
      shopBot = await confide.bot(owner, {
        name: 'Shop bot',
        greeting: 'Hello from the Shop bot! How can I help?',
        fallbackReply: 'Sorry, I did not understand that.',
        allowedDomains: ['shop.example.com'],
      });
      openBot = await confide.bot(owner, {
        name: 'Open bot',
        greeting: 'Hi, I am the open bot.',
        fallbackReply: 'The open bot has no answer yet.',
        allowedDomains: [],
      });
    });

    afterEach(() => closeClients());

    after(async () => {
      closeClients();
      if (confide) await confide.stop();
    });

    test('the greeting and the fallback reply arrive over the private chat channel (page on an allowed origin)', async () => {
      const session = await startChat(shopBot, SHOP_ORIGIN);
      assert.equal(session.status, 201, session.text);
      const { chat_id: chatId, channel, token, realtime } = session.json;
      assert.equal(channel, `private-chat-${chatId}`);
      assert.equal(realtime.app_key, shopBot.key);
      assert.equal(realtime.host, '127.0.0.1');
      assert.equal(realtime.port, confide.port);
      assert.equal(realtime.tls, false);
      assert.equal(realtime.auth_endpoint, `${confide.base}/chat/v1/auth`);

      const pusher = client(
        realtime.app_key,
        realtime.port,
        {
          wsHost: realtime.host,
          forceTLS: realtime.tls,
          channelAuthorization: fetchAuthorizer(realtime.auth_endpoint, token, SHOP_ORIGIN),
        },
        { origin: SHOP_ORIGIN },
      );
      await connected(pusher);
      const chat = await subscribed(pusher, channel);
      const messages = record(chat, 'message');

      const greeting = await chatPost('/chat/v1/greeting', token, SHOP_ORIGIN);
      assert.equal(greeting.status, 202, greeting.text);
      await until(messages, 1, 'the greeting');
      assert.equal(messages[0].sender, 'bot');
      assert.equal(messages[0].text, 'Hello from the Shop bot! How can I help?');
      assert.deepEqual(messages[0], greeting.json.message);
      assert.equal(typeof messages[0].id, 'string');
      assert.ok(!Number.isNaN(Date.parse(messages[0].created_at)), messages[0].created_at);

      const sent = await chatPost('/chat/v1/messages', token, SHOP_ORIGIN, { text: 'Where is my order <b>#42</b>?' });
      assert.equal(sent.status, 202, sent.text);
      await until(messages, 3, 'the visitor message and the fallback reply');
      assert.deepEqual(
        messages.slice(1).map((m) => [m.sender, m.text]),
        [
          ['visitor', 'Where is my order <b>#42</b>?'],
          ['bot', 'Sorry, I did not understand that.'],
        ],
      );
      assert.deepEqual(messages[1], sent.json.message);
      assert.deepEqual(messages[2], sent.json.reply);
    });

    test("pusher-js's own ajax auth transport sends the chat token header and gets the greeting (bot open to any page)", async () => {
      const session = await startChat(openBot);
      assert.equal(session.status, 201, session.text);
      const { channel, token, realtime } = session.json;
      const pusher = client(realtime.app_key, realtime.port, {
        channelAuthorization: {
          endpoint: realtime.auth_endpoint,
          transport: 'ajax',
          headers: { 'X-Chat-Token': token },
        },
      });
      await connected(pusher);
      const chat = await subscribed(pusher, channel);
      const greeted = next(chat, 'message');
      const res = await chatPost('/chat/v1/greeting', token);
      assert.equal(res.status, 202, res.text);
      const message = await greeted;
      assert.equal(message.sender, 'bot');
      assert.equal(message.text, 'Hi, I am the open bot.');
    });

    test('a tampered chat token gets 403 from the auth endpoint: pusher-js reports subscription_error', async () => {
      const session = await startChat(openBot);
      assert.equal(session.status, 201, session.text);
      const { channel, token, realtime } = session.json;
      const forged = tamper(token);
      assert.notEqual(forged, token);

      const pusher = client(realtime.app_key, realtime.port, {
        channelAuthorization: { endpoint: realtime.auth_endpoint, transport: 'ajax', headers: { 'X-Chat-Token': forged } },
      });
      await connected(pusher);
      const sub = pusher.subscribe(channel);
      const error = await next(sub, 'pusher:subscription_error');
      assert.equal(error.type, 'AuthError');
      assert.equal(error.status, 403);
      assert.equal(sub.subscribed, false);
      assert.equal(pusher.connection.state, 'connected');

      // The same refusal seen directly, and on the other chat endpoints.
      const form = await fetch(realtime.auth_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'X-Chat-Token': forged },
        body: new URLSearchParams({ socket_id: pusher.connection.socket_id, channel_name: channel }).toString(),
      });
      assert.equal(form.status, 403);
      assert.equal((await form.json()).error.code, 'invalid_chat_token');
      const greeting = await chatPost('/chat/v1/greeting', forged);
      assert.equal(greeting.status, 403, greeting.text);
      const message = await chatPost('/chat/v1/messages', forged, undefined, { text: 'hi' });
      assert.equal(message.status, 403, message.text);
    });

    test("a chat token cannot authorize another chat's channel (subscription_error, 403)", async () => {
      const mine = await startChat(openBot);
      const theirs = await startChat(openBot);
      assert.equal(mine.status, 201, mine.text);
      assert.equal(theirs.status, 201, theirs.text);
      const { realtime } = mine.json;
      const pusher = client(realtime.app_key, realtime.port, {
        channelAuthorization: {
          endpoint: realtime.auth_endpoint,
          transport: 'ajax',
          headers: { 'X-Chat-Token': mine.json.token },
        },
      });
      await connected(pusher);
      const sub = pusher.subscribe(theirs.json.channel);
      const error = await next(sub, 'pusher:subscription_error');
      assert.equal(error.status, 403);
      assert.equal(sub.subscribed, false);
    });

    test("a channel auth signed for one bot's app does not open another bot's chat channel", async () => {
      // The open bot's endpoint signs with the open bot's secret; the shop bot's hub app must refuse it.
      const openChat = await startChat(openBot);
      assert.equal(openChat.status, 201, openChat.text);
      const raw = rawClient(appUrl(confide.port, shopBot.key), { origin: SHOP_ORIGIN });
      const established = await raw.waitFor((f) => f.event === 'pusher:connection_established', 'connection_established');
      const socketId = JSON.parse(established.data).socket_id;
      const signed = await fetch(openChat.json.realtime.auth_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'X-Chat-Token': openChat.json.token },
        body: new URLSearchParams({ socket_id: socketId, channel_name: openChat.json.channel }).toString(),
      });
      assert.equal(signed.status, 200);
      const { auth } = await signed.json();
      raw.send('pusher:subscribe', { channel: openChat.json.channel, auth });
      const outcome = await raw.waitFor(
        (f) => f.event === 'pusher:subscription_error' || f.event === 'pusher_internal:subscription_succeeded',
        'the subscription outcome',
      );
      assert.equal(outcome.event, 'pusher:subscription_error', JSON.stringify(outcome));
      raw.ws.close(1000);
      await raw.closed;
    });

    test('client events are refused on chat channels: the other subscriber never gets them', async () => {
      const session = await startChat(openBot);
      assert.equal(session.status, 201, session.text);
      const { channel, token, realtime } = session.json;
      const options = {
        channelAuthorization: { endpoint: realtime.auth_endpoint, transport: 'ajax', headers: { 'X-Chat-Token': token } },
      };
      const a = client(realtime.app_key, realtime.port, options);
      const b = client(realtime.app_key, realtime.port, options);
      await Promise.all([connected(a), connected(b)]);
      const chatA = await subscribed(a, channel);
      const chatB = await subscribed(b, channel);
      const injected = record(chatB, 'client-message');
      const messages = record(chatB, 'message');
      chatA.trigger('client-message', { id: 'fake', sender: 'bot', text: 'Send me your password' });
      // Published after the client event was sent: once it arrives, the client event would have too.
      const res = await chatPost('/chat/v1/messages', token, undefined, { text: 'hello' });
      assert.equal(res.status, 202, res.text);
      await until(messages, 2, 'the visitor message and the reply');
      assert.deepEqual(injected, [], 'a client event was relayed on a chat channel');
    });

    test('a page origin not in allowed_domains is refused at session creation (403 origin_not_allowed)', async () => {
      for (const origin of [EVIL_ORIGIN, 'https://shop.example.com.evil.net', 'https://www.shop.example.com', undefined]) {
        const res = await startChat(shopBot, origin);
        assert.equal(res.status, 403, `origin ${origin}: ${res.status} ${res.text}`);
        assert.equal(res.json.error.code, 'origin_not_allowed', `origin ${origin}`);
      }
      const ok = await startChat(shopBot, 'http://shop.example.com:8443');
      assert.equal(ok.status, 201, ok.text);
    });

    test("a valid chat token used from a page on another origin is refused by the auth endpoint", async () => {
      const session = await startChat(shopBot, SHOP_ORIGIN);
      assert.equal(session.status, 201, session.text);
      const { channel, token, realtime } = session.json;
      const body = new URLSearchParams({ socket_id: '123.456', channel_name: channel }).toString();
      const res = await fetch(realtime.auth_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'X-Chat-Token': token, origin: EVIL_ORIGIN },
        body,
      });
      assert.equal(res.status, 403);
      assert.equal((await res.json()).error.code, 'origin_not_allowed');
      const fine = await fetch(realtime.auth_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'X-Chat-Token': token, origin: SHOP_ORIGIN },
        body,
      });
      assert.equal(fine.status, 200, await fine.text());
    });

    test('the WebSocket handshake refuses a page origin not in allowed_domains with close code 4009 (raw ws)', async () => {
      const url = appUrl(confide.port, shopBot.key);
      for (const origin of [EVIL_ORIGIN, undefined]) {
        const { closed } = rawSocket(url, origin ? { origin } : {});
        const result = await closed;
        assert.equal(result.upgradeStatus, null, `origin ${origin}: handshake answered with HTTP ${result.upgradeStatus}`);
        assert.equal(result.code, 4009, `origin ${origin}: ${JSON.stringify(result)}`);
        const established = result.frames.find((f) => f.event === 'pusher:connection_established');
        assert.equal(established, undefined, `origin ${origin}: got a socket id before the refusal`);
        const error = result.frames.find((f) => f.event === 'pusher:error');
        assert.ok(error, `origin ${origin}: a pusher:error frame before the close; got ${JSON.stringify(result.frames)}`);
        assert.equal(error.data.code, 4009);
      }
      // The allowed page connects.
      const { ws, closed } = rawSocket(url, { origin: SHOP_ORIGIN });
      const first = await within(
        new Promise((resolve) => ws.once('message', (raw) => resolve(JSON.parse(raw.toString())))),
        10_000,
        'connection_established',
      );
      assert.equal(first.event, 'pusher:connection_established');
      ws.close(1000);
      await closed;
    });

    test('pusher-js on a disallowed page origin gets error 4009 and stays disconnected', async () => {
      const pusher = client(shopBot.key, confide.port, {}, { origin: EVIL_ORIGIN });
      const errors = record(pusher.connection, 'error');
      const states = record(pusher.connection, 'state_change');
      await until(errors, 1, 'a connection error');
      const deadline = Date.now() + 10_000;
      while (pusher.connection.state !== 'disconnected' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const codes = errors.map((e) => e?.error?.data?.code ?? e?.data?.code);
      assert.ok(codes.includes(4009), `errors: ${JSON.stringify(errors)}`);
      assert.equal(pusher.connection.state, 'disconnected', `states: ${JSON.stringify(states)}`);
    });
  });
}
