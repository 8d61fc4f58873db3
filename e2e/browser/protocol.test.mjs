// The widget's Pusher-protocol behaviour against a scripted hub that misbehaves on cue: close
// codes, pings both ways, a dead connection, re-authorization, resubscription and the catch-up
// after it, and the order of the identity verification for signed-in visitors. The tests against
// a real `confide serve` are in widget.test.mjs.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import {
  focusedInWidget, launchBrowser, openWatched, sleep, sriOf, startHostPage, tabToLauncher, waitFor, widget,
} from './lib/harness.mjs';
import { startMockHub, WIDGET_FILE } from './lib/mock-hub.mjs';

const integrity = sriOf(readFileSync(WIDGET_FILE));

// What the customer's backend signs for its signed-in user (the scripted hub accepts this one).
const JWT = 'eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIn0.bW9jay1zaWduYXR1cmUtb2YtdGhlLWN1c3RvbWVy';

/**
 * The customer's side of identity verification: the page's own script (an external file, as the
 * strict CSP wants) asks its backend for a JWT; the backend answers `jwt`, or 401 when null.
 * `script` replaces the page script (for hosts that misbehave).
 */
function customer(jwt, script) {
  const asked = [];
  return {
    asked,
    page: {
      hostScript: script ?? `window.confideOptions = {
  getAuthToken: (chatId) => fetch('/identity-token?chat=' + encodeURIComponent(chatId)).then((res) => {
    if (!res.ok) throw new Error('not signed in');
    return res.text();
  }),
};
`,
      routes: {
        '/identity-token': (req, res) => {
          asked.push(new URL(req.url, 'http://host').searchParams.get('chat'));
          if (jwt) res.writeHead(200, { 'content-type': 'text/plain' }).end(jwt);
          else res.writeHead(401, { 'content-type': 'text/plain' }).end('not signed in');
        },
      },
    },
  };
}

/** Everything the page keeps or shows: its URL, storage, cookies, markup and the widget's DOM. */
function pageTraces(page) {
  return page.evaluate(() => {
    const parts = [location.href, document.cookie, JSON.stringify({ ...localStorage }), JSON.stringify({ ...sessionStorage }),
      document.documentElement.outerHTML];
    for (const el of document.querySelector('confide-chat').shadowRoot.querySelectorAll('*')) {
      parts.push(el.textContent, el.value ?? '', ...[...el.attributes].map((a) => a.value));
    }
    return parts.join('\n');
  });
}

test('the widget file: ASCII only, small, and free of HTML-string and eval sinks', () => {
  const source = readFileSync(WIDGET_FILE);
  // ASCII, so a host page in any charset decodes the same strings.
  assert.ok(source.every((b) => b < 0x80), 'non-ASCII byte in confide.js: use \\u escapes');
  const text = source.toString('utf8');
  for (const sink of ['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'eval(', 'new Function',
    'cssText', "setAttribute('style'", 'createContextualFragment', 'DOMParser']) {
    assert.ok(!text.includes(sink), `confide.js uses ${sink}`);
  }
  const gzipped = gzipSync(source, { level: 9 }).length;
  assert.ok(gzipped < 30 * 1024, `confide.js is ${gzipped} bytes gzipped`);
});

describe('widget protocol (scripted hub)', () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  // One hub, host page and browser page per test.
  async function setup(hubOptions = {}, pageOptions = {}) {
    const hub = await startMockHub(hubOptions);
    const site = await startHostPage({ hostname: 'localhost', server: hub.url, bot: hub.botKey, integrity, ...pageOptions });
    const watched = await openWatched(browser, site.url);
    const w = widget(watched.page);
    const teardown = async () => {
      await watched.context.close();
      await site.close();
      await hub.close();
    };
    return { hub, site, ...watched, w, teardown };
  }

  async function openAndConnect(t) {
    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'connected', { what: 'connected' });
  }

  const requests = (hub) => hub.log.map((e) => `${e.method} ${e.path}`);

  // Drops the socket and keeps the hub unreachable until the returned function is called.
  async function dropConnection(t) {
    const release = t.hub.holdConnections();
    t.hub.closeAll(4201, 'pong not received');
    await waitFor(() => t.hub.heldUpgrades.length === 1, { what: 'the widget trying to reconnect' });
    return release;
  }

  // Frames are handled in order: once the pong is back, the widget has seen what was sent before.
  async function roundTrip(conn) {
    const pongs = () => conn.frames.filter((f) => f.event === 'pusher:pong').length;
    const before = pongs();
    conn.ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
    await waitFor(() => pongs() > before, { what: 'the pong' });
  }

  test('nothing is fetched before the bubble opens; then one session, one socket, one greeting', async () => {
    const t = await setup();
    try {
      await sleep(300);
      assert.deepEqual(t.hub.log, [], 'no chat request before the visitor opens the bubble');
      // Only the page's nudge rules are read, once and without any chat token.
      assert.deepEqual(t.hub.nudgeReads, [{ token: null }]);
      assert.equal(t.hub.connections.length, 0);
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      assert.equal(await t.w.messages.first().textContent(), 'Bot: Hello from the mock');
      const paths = t.hub.log.map((e) => e.path);
      assert.deepEqual(paths, ['/chat/v1/mockbot_0123456789/sessions', '/chat/v1/auth', '/chat/v1/greeting']);
      const auth = t.hub.log[1];
      assert.ok(auth.token, 'the channel auth request carries X-Chat-Token');
      assert.match(auth.ct, /^application\/x-www-form-urlencoded/);
      const form = new URLSearchParams(auth.body);
      assert.equal(form.get('socket_id'), t.hub.connections[0].socketId);
      assert.match(form.get('channel_name'), /^private-chat-/);
      assert.deepEqual(t.hub.connections[0].query, { protocol: '7', client: 'confide-widget', version: '1.0' });
      // The visitor id is kept; the token is not stored anywhere the page can read later.
      const stored = await t.page.evaluate(() => ({ ...localStorage }));
      assert.deepEqual(Object.keys(stored), ['confide.visitor.mockbot_0123456789']);
      const token = [...t.hub.chats.keys()][0];
      assert.ok(!JSON.stringify(stored).includes(token));
      // The posted message and the reply come both in the HTTP answer and over the channel: shown once.
      await t.w.input.fill('Where is my order?');
      await t.page.keyboard.press('Enter');
      await waitFor(async () => (await t.w.messages.count()) === 3, { what: 'message and reply' });
      await sleep(300);
      assert.deepEqual(await t.w.messages.allTextContents(), [
        'Bot: Hello from the mock', 'You: Where is my order?', 'Bot: A mock reply',
      ]);
      assert.deepEqual(await t.violations(), []);
    } finally {
      await t.teardown();
    }
  });

  test('a bot text outside the formatting subset is built as text, whatever the hub sends', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      // What no Confide server sends (its sanitizer removes it on save): the widget must still hold.
      t.hub.pushToAll('<img src=x id=pwned onerror="alert(1)"><b onclick="alert(2)">bold</b> &lt;i&gt; ' +
        '<a href="javascript:alert(3)">js</a> <a href="https://example.com/a?x=1&amp;y=2">ok</a> ' +
        '<A HREF="https://example.com/">upper</a> <p>para</b><ul><li>one</li></ul> &#60;&#x3e; &bogus; <');
      await waitFor(async () => (await t.w.messages.count()) === 2, { what: 'the message' });
      const m = t.w.messages.last();
      assert.equal(await m.textContent(),
        'Bot: <img src=x id=pwned onerror="alert(1)">bold <i> js ok <A HREF="https://example.com/">upper paraone <> &bogus; <');
      assert.equal(await m.locator('img, [onclick], [onerror], i, script').count(), 0);
      assert.equal(await m.locator('b').textContent(), 'bold');
      assert.deepEqual(await m.locator('a').evaluateAll((as) => as.map((a) => a.getAttribute('href'))),
        [null, 'https://example.com/a?x=1&y=2']);
      assert.equal(await m.locator('p ul li').textContent(), 'one');
      assert.equal(await t.page.evaluate(() => document.getElementById('pwned')), null);
      assert.deepEqual(await t.violations(), []);
    } finally {
      await t.teardown();
    }
  });

  test('answers the hub\'s pings with pongs', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      const conn = t.hub.live();
      conn.ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
      await waitFor(() => conn.frames.some((f) => f.event === 'pusher:pong'), { what: 'pong' });
    } finally {
      await t.teardown();
    }
  });

  test('pings after activity_timeout of silence, and a missing pong means a dead connection', async () => {
    const t = await setup({ activityTimeout: 1 });
    try {
      await openAndConnect(t);
      const first = t.hub.live();
      await waitFor(() => first.frames.some((f) => f.event === 'pusher:ping'), { what: 'ping', timeout: 4000 });
      assert.equal(first.ws.readyState, 1, 'a ponged connection stays open');
      // Now the hub goes silent: no pong. The widget gives up on the socket and connects again.
      t.hub.opts.answerPings = false;
      await waitFor(() => t.hub.connections.length >= 2, { what: 'a new connection after the pong timeout', timeout: 8000 });
      t.hub.opts.answerPings = true;
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'connected', { what: 'connected again' });
      const second = t.hub.live();
      assert.notEqual(second.socketId, first.socketId);
      const subscribe = second.frames.find((f) => f.event === 'pusher:subscribe');
      assert.ok(subscribe, 'resubscribed on the new connection');
      // It re-authorized for the new socket id (the hub verified the signature).
      assert.ok(second.subscribed.size === 1);
    } finally {
      await t.teardown();
    }
  });

  test('4200-4299: reconnects at once, re-authorizes, resubscribes and receives again; no second greeting', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      const closedAt = Date.now();
      t.hub.closeAll(4201, 'pong not received');
      await waitFor(() => t.hub.connections.length === 2, { what: 'reconnect' });
      assert.ok(t.hub.connections[1].openedAt - closedAt < 900, 'reconnected without waiting');
      await waitFor(() => t.hub.live()?.subscribed.size === 1, { what: 'resubscribed' });
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'connected', { what: 'connected' });
      t.hub.pushToAll('Still here');
      await waitFor(async () => (await t.w.messages.count()) === 2, { what: 'message after reconnect' });
      assert.equal(await t.w.messages.last().textContent(), 'Bot: Still here');
      // The re-subscription, and only it, is followed by a catch-up.
      assert.deepEqual(requests(t.hub), [
        'POST /chat/v1/mockbot_0123456789/sessions', 'POST /chat/v1/auth', 'POST /chat/v1/greeting',
        'POST /chat/v1/auth', 'GET /chat/v1/messages',
      ]);
      assert.ok(t.hub.log.at(-1).token, 'the catch-up carries X-Chat-Token');
    } finally {
      await t.teardown();
    }
  });

  test('a reply published while the socket was down appears after the reconnect, once', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      const release = await dropConnection(t);
      t.hub.pushToAll('Sorry for the wait');
      assert.equal(await t.w.messages.count(), 1, 'nobody was subscribed to receive it');
      release();
      await waitFor(async () => (await t.w.messages.count()) >= 2, { what: 'the missed reply' });
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'connected', { what: 'connected' });
      // The history holds the greeting too: it is not shown again.
      assert.deepEqual(await t.w.messages.allTextContents(), ['Bot: Hello from the mock', 'Bot: Sorry for the wait']);
      assert.deepEqual(requests(t.hub).slice(3), ['POST /chat/v1/auth', 'GET /chat/v1/messages']);
    } finally {
      await t.teardown();
    }
  });

  test('messages arriving during the catch-up are shown after the history, once', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      const reconnect = await dropConnection(t);
      t.hub.pushToAll('Missed while away');
      const answerHistory = t.hub.holdHistory();
      reconnect();
      await waitFor(() => requests(t.hub).includes('GET /chat/v1/messages'), { what: 'the catch-up request' });
      // Published over the channel while the history is on its way (and stored, so it is in it too).
      t.hub.pushToAll('Live during the catch-up');
      await roundTrip(t.hub.live());
      assert.equal(await t.w.messages.count(), 1, 'a live message waits for the history');
      answerHistory();
      await waitFor(async () => (await t.w.messages.count()) >= 3, { what: 'history and live message' });
      assert.deepEqual(await t.w.messages.allTextContents(), [
        'Bot: Hello from the mock', 'Bot: Missed while away', 'Bot: Live during the catch-up',
      ]);
      t.hub.pushToAll('After the catch-up');
      await waitFor(async () => (await t.w.messages.count()) >= 4, { what: 'a later message' });
      assert.equal(await t.w.messages.last().textContent(), 'Bot: After the catch-up');
      assert.equal(await t.w.messages.count(), 4);
    } finally {
      await t.teardown();
    }
  });

  test('a message sent during the catch-up stays after the messages it missed', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      const reconnect = await dropConnection(t);
      t.hub.pushToAll('Missed while away');
      const answerHistory = t.hub.holdHistory();
      reconnect();
      await waitFor(() => requests(t.hub).includes('GET /chat/v1/messages'), { what: 'the catch-up request' });
      await t.w.input.fill('Hello again');
      await t.page.keyboard.press('Enter');
      await waitFor(() => requests(t.hub).includes('POST /chat/v1/messages'), { what: 'the message sent' });
      answerHistory();
      await waitFor(async () => (await t.w.messages.count()) >= 4, { what: 'history, message and reply' });
      assert.deepEqual(await t.w.messages.allTextContents(), [
        'Bot: Hello from the mock', 'Bot: Missed while away', 'You: Hello again', 'Bot: A mock reply',
      ]);
      assert.equal(await t.w.root.locator('.msg.pending').count(), 0);
    } finally {
      await t.teardown();
    }
  });

  test('offline and back online with the socket intact: Offline, then Connected again, no catch-up', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      await t.context.setOffline(true);
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'offline', { what: 'offline shown' });
      await t.context.setOffline(false);
      // The widget checks the socket with a ping; the pong proves it alive.
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'connected', { what: 'connected again' });
      assert.ok(t.hub.live().frames.some((f) => f.event === 'pusher:ping'));
      assert.equal(t.hub.connections.length, 1);
      assert.ok(!requests(t.hub).includes('GET /chat/v1/messages'));
    } finally {
      await t.teardown();
    }
  });

  test('4100-4199: waits at least a second before reconnecting', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      const closedAt = Date.now();
      t.hub.closeAll(4100, 'over capacity');
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'reconnecting', { what: 'reconnecting shown' });
      assert.equal(await t.w.status.textContent(), 'Reconnecting…');
      await waitFor(() => t.hub.connections.length === 2, { what: 'reconnect', timeout: 5000 });
      assert.ok(t.hub.connections[1].openedAt - closedAt >= 1000, 'waited at least 1 s');
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'connected', { what: 'connected' });
    } finally {
      await t.teardown();
    }
  });

  test('4000-4099: does not reconnect and shows offline; sending still works over HTTP', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      t.hub.closeAll(4009, 'unauthorized');
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'offline', { what: 'offline' });
      assert.equal(await t.w.status.textContent(), 'Offline');
      await sleep(2500);
      assert.equal(t.hub.connections.length, 1, 'no reconnection after a 40xx close');
      assert.ok(await t.w.error.isVisible());
      await t.w.input.fill('hello?');
      await t.page.keyboard.press('Enter');
      await waitFor(async () => (await t.w.messages.allTextContents()).includes('Bot: A mock reply'), { what: 'reply from the HTTP answer' });
    } finally {
      await t.teardown();
    }
  });

  test('a refusal shows the bot\'s message; a rate limit retries after Retry-After', async () => {
    const t = await setup();
    try {
      t.hub.opts.sessionRefusal = {
        status: 403,
        error: { code: 'outside_active_hours', message: 'We answer Monday to Friday, 9 to 17.' },
      };
      await tabToLauncher(t.page);
      await t.page.keyboard.press('Enter');
      await t.w.error.waitFor({ state: 'visible' });
      assert.equal(await t.w.error.textContent(), 'We answer Monday to Friday, 9 to 17.');
      assert.equal(await t.w.status.getAttribute('data-state'), 'offline');
      assert.equal(await t.w.input.isDisabled(), true);
      assert.equal(t.hub.connections.length, 0);
    } finally {
      await t.teardown();
    }
    const u = await setup();
    try {
      u.hub.opts.sessionRefusal = {
        status: 429,
        headers: { 'retry-after': '1', 'access-control-expose-headers': 'retry-after' },
        error: { code: 'rate_limited', message: 'too many requests; slow down' },
      };
      await tabToLauncher(u.page);
      await u.page.keyboard.press('Enter');
      await u.w.error.waitFor({ state: 'visible' });
      assert.equal(await u.w.error.textContent(), 'Too many requests. Please wait a moment and try again.');
      u.hub.opts.sessionRefusal = null;
      await waitFor(async () => (await u.w.status.getAttribute('data-state')) === 'connected', { what: 'the retry', timeout: 5000 });
      await waitFor(async () => (await u.w.messages.count()) === 1, { what: 'greeting' });
      assert.equal(await u.w.error.isVisible(), false);
    } finally {
      await u.teardown();
    }
  });

  test('without constructable stylesheets it styles through CSSOM properties, still within the CSP', async () => {
    const hub = await startMockHub();
    const site = await startHostPage({ hostname: 'localhost', server: hub.url, bot: hub.botKey, integrity });
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.addInitScript(() => {
        delete CSSStyleSheet.prototype.replaceSync;
        window.__cspViolations = [];
        document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push(e.effectiveDirective));
      });
      const problems = [];
      page.on('console', (m) => problems.push(m.text()));
      await page.goto(site.url);
      const w = widget(page);
      const sheets = await page.evaluate(() => document.querySelector('confide-chat').shadowRoot.adoptedStyleSheets.length);
      assert.equal(sheets, 0, 'the fallback path is taken');
      const box = await w.launcher.boundingBox();
      assert.equal(Math.round(box.width), 56);
      assert.equal(await w.launcher.evaluate((el) => getComputedStyle(el).borderRadius), '50%');
      assert.equal(await page.evaluate(() => getComputedStyle(document.querySelector('confide-chat')).position), 'fixed');
      await tabToLauncher(page);
      await page.keyboard.press('Enter');
      assert.equal(await w.panel.evaluate((el) => getComputedStyle(el).display), 'flex');
      await waitFor(async () => (await w.messages.count()) === 1, { what: 'greeting' });
      assert.equal(await w.error.isVisible(), false, 'a hidden element stays hidden');
      await page.keyboard.press('Escape');
      assert.equal(await w.panel.isVisible(), false);
      assert.deepEqual(await page.evaluate(() => window.__cspViolations), []);
      assert.deepEqual(problems, []);
      assert.deepEqual(site.reports, []);
    } finally {
      await context.close();
      await site.close();
      await hub.close();
    }
  });

  test('an expired chat token: the widget starts a new chat and sends again, without a second greeting', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      t.hub.expireTokens();
      await t.w.input.fill('are you there?');
      await t.page.keyboard.press('Enter');
      await waitFor(async () => (await t.w.messages.count()) === 3, { what: 'message and reply' });
      assert.deepEqual(await t.w.messages.allTextContents(), [
        'Bot: Hello from the mock', 'You: are you there?', 'Bot: A mock reply',
      ]);
      assert.equal(t.hub.log.filter((e) => e.path.endsWith('/sessions')).length, 2);
      assert.equal(t.hub.log.filter((e) => e.path === '/chat/v1/greeting').length, 1);
      await waitFor(async () => (await t.w.status.getAttribute('data-state')) === 'connected', { what: 'connected' });
      await waitFor(() => t.hub.live()?.subscribed.size === 1, { what: 'subscribed to the new chat' });
      const newChannel = [...t.hub.live().subscribed][0];
      assert.equal(newChannel, [...t.hub.chats.values()][0].channel);
      assert.equal(await t.w.error.isVisible(), false);
    } finally {
      await t.teardown();
    }
  });

  test('a signed-in visitor: verified before the channel is authorized, then the new chat token everywhere', async () => {
    const backend = customer(JWT);
    const t = await setup({}, backend.page);
    try {
      t.hub.opts.identity = { accept: JWT, sub: 'user-42' };
      t.hub.opts.requireIdentity = { bot_message: 'Please sign in to your Acme account first.' };
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      await t.w.input.fill('Where is my order?');
      await t.page.keyboard.press('Enter');
      await waitFor(async () => (await t.w.messages.count()) >= 3, { what: 'message and reply' });
      assert.deepEqual(await t.w.messages.allTextContents(), [
        'Bot: Hello from the mock', 'You: Where is my order?', 'Bot: A mock reply',
      ]);
      assert.deepEqual(requests(t.hub), [
        'POST /chat/v1/mockbot_0123456789/sessions', 'POST /chat/v1/identity', 'POST /chat/v1/auth',
        'POST /chat/v1/greeting', 'POST /chat/v1/messages',
      ]);
      const [started, identity, ...rest] = t.hub.log;
      const chat = [...t.hub.chats.values()][0];
      assert.deepEqual(backend.asked, [chat.id], 'getAuthToken is called with the chat id');
      assert.equal(identity.chatToken, started.issued, 'verified with the token of the chat just started');
      assert.match(identity.ct, /^application\/json/);
      assert.deepEqual(JSON.parse(identity.body), { token: JWT });
      for (const e of rest) assert.equal(e.chatToken, identity.issued, `${e.path} uses the verified chat token`);
      assert.equal(chat.verified, 'user-42');
      assert.equal(await t.w.error.isVisible(), false);
      // The JWT went to the identity endpoint only.
      assert.ok(!(await pageTraces(t.page)).includes(JWT), 'the JWT is not in the page');
      assert.ok(!t.requests.some((r) => r.includes(JWT)), 'the JWT is not in a URL');
      assert.ok(!t.problems.some((p) => p.includes(JWT)), 'the JWT is not logged');
      assert.deepEqual(await t.violations(), []);
    } finally {
      await t.teardown();
    }
  });

  test('the host page cannot tell who the visitor is: the chat goes on unverified, no identity request', async () => {
    const hosts = {
      'getAuthToken rejects': customer(null),
      'getAuthToken throws': customer(null, "window.confideOptions = { getAuthToken: () => { throw new Error('no user'); } };\n"),
      'getAuthToken resolves to no token': customer(null, 'window.confideOptions = { getAuthToken: async () => null };\n'),
      'confideOptions without getAuthToken': customer(null, 'window.confideOptions = { getAuthToken: 42 };\n'),
    };
    for (const [name, backend] of Object.entries(hosts)) {
      const t = await setup({}, backend.page);
      try {
        t.hub.opts.identity = { accept: JWT, sub: 'user-42' };
        await openAndConnect(t);
        await waitFor(async () => (await t.w.messages.count()) === 1, { what: `greeting (${name})` });
        assert.deepEqual(requests(t.hub), [
          'POST /chat/v1/mockbot_0123456789/sessions', 'POST /chat/v1/auth', 'POST /chat/v1/greeting',
        ], name);
        assert.equal(t.hub.log[1].chatToken, t.hub.log[0].issued, name);
        assert.equal(await t.w.error.isVisible(), false, name);
        assert.deepEqual(t.problems.filter((p) => !/status of 401/.test(p)), [], name);
      } finally {
        await t.teardown();
      }
    }
  });

  test('the identity token is refused: the chat goes on unverified with its first token; nothing sensitive logged', async () => {
    const backend = customer(JWT);
    const t = await setup({}, backend.page);
    try {
      t.hub.opts.identity = { accept: 'another.signed.token', sub: 'user-42' };
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      assert.deepEqual(requests(t.hub), [
        'POST /chat/v1/mockbot_0123456789/sessions', 'POST /chat/v1/identity', 'POST /chat/v1/auth', 'POST /chat/v1/greeting',
      ]);
      const [started, , auth, greeting] = t.hub.log;
      assert.equal(auth.chatToken, started.issued);
      assert.equal(greeting.chatToken, started.issued);
      assert.equal([...t.hub.chats.values()][0].verified, undefined);
      assert.equal(await t.w.error.isVisible(), false, 'an unverified chat is still a chat');
      assert.ok(t.problems.some((p) => p.includes('invalid_identity_token')), t.problems.join('\n'));
      assert.ok(!t.problems.some((p) => p.includes(JWT)));
      assert.ok(!(await pageTraces(t.page)).includes(JWT));
    } finally {
      await t.teardown();
    }
  });

  test('a bot that requires identity refuses an unverified visitor with its message, and nothing more is asked', async () => {
    const t = await setup();
    try {
      t.hub.opts.requireIdentity = { bot_message: 'Please sign in to your Acme account first.' };
      await tabToLauncher(t.page);
      await t.page.keyboard.press('Enter');
      await t.w.error.waitFor({ state: 'visible' });
      assert.equal(await t.w.error.textContent(), 'Please sign in to your Acme account first.');
      assert.equal(await t.w.status.getAttribute('data-state'), 'offline');
      assert.equal(await t.w.input.isDisabled(), true);
      assert.equal(await t.w.send.isDisabled(), true);
      assert.deepEqual(requests(t.hub), ['POST /chat/v1/mockbot_0123456789/sessions', 'POST /chat/v1/auth']);
      await waitFor(() => t.hub.connections[0]?.closedAt, { what: 'the socket closed' });
      assert.equal(t.hub.connections.length, 1, 'no reconnection');
      assert.equal(await t.w.messages.count(), 0);
    } finally {
      await t.teardown();
    }
    // Without the bot's own text the widget says it in its words.
    const u = await setup();
    try {
      u.hub.opts.requireIdentity = {};
      await tabToLauncher(u.page);
      await u.page.keyboard.press('Enter');
      await u.w.error.waitFor({ state: 'visible' });
      assert.equal(await u.w.error.textContent(), 'Please sign in to chat with us.');
    } finally {
      await u.teardown();
    }
  });

  test('a chat started again after its token expired is verified again before it is used', async () => {
    const backend = customer(JWT);
    const t = await setup({}, backend.page);
    try {
      t.hub.opts.identity = { accept: JWT, sub: 'user-42' };
      t.hub.opts.requireIdentity = { bot_message: 'Please sign in to your Acme account first.' };
      await openAndConnect(t);
      await waitFor(async () => (await t.w.messages.count()) === 1, { what: 'greeting' });
      t.hub.expireTokens();
      await t.w.input.fill('are you there?');
      await t.page.keyboard.press('Enter');
      await waitFor(async () => (await t.w.messages.count()) >= 3, { what: 'message and reply' });
      await waitFor(() => t.hub.live()?.subscribed.size === 1 && t.hub.log.length >= 9, { what: 'subscribed to the new chat' });
      assert.deepEqual(await t.w.messages.allTextContents(), [
        'Bot: Hello from the mock', 'You: are you there?', 'Bot: A mock reply',
      ]);
      const all = requests(t.hub);
      assert.deepEqual(all.slice(0, 6), [
        'POST /chat/v1/mockbot_0123456789/sessions', 'POST /chat/v1/identity', 'POST /chat/v1/auth',
        'POST /chat/v1/greeting', 'POST /chat/v1/messages', 'POST /chat/v1/mockbot_0123456789/sessions',
      ]);
      assert.equal(all[6], 'POST /chat/v1/identity', 'the new chat is verified first');
      assert.deepEqual(all.slice(7).sort(), ['POST /chat/v1/auth', 'POST /chat/v1/messages']);
      const renewed = t.hub.log[6];
      assert.equal(renewed.chatToken, t.hub.log[5].issued);
      for (const e of t.hub.log.slice(7)) assert.equal(e.chatToken, renewed.issued, `${e.path} uses the new verified token`);
      const chat = [...t.hub.chats.values()][0];
      assert.equal(backend.asked.length, 2);
      assert.equal(backend.asked[1], chat.id, 'getAuthToken is asked for the new chat');
      assert.notEqual(backend.asked[0], backend.asked[1]);
      assert.equal(await t.w.error.isVisible(), false);
    } finally {
      await t.teardown();
    }
  });

  test('Escape closes the panel and gives the focus back to the launcher', async () => {
    const t = await setup();
    try {
      await openAndConnect(t);
      assert.equal(await focusedInWidget(t.page), 'input');
      assert.equal(await t.w.launcher.getAttribute('aria-expanded'), 'true');
      await t.page.keyboard.press('Escape');
      assert.equal(await t.w.panel.isVisible(), false);
      assert.equal(await focusedInWidget(t.page), 'launcher');
      assert.equal(await t.w.launcher.getAttribute('aria-expanded'), 'false');
      await t.page.keyboard.press('Enter');
      assert.equal(await t.w.panel.isVisible(), true);
      assert.equal(await focusedInWidget(t.page), 'input');
      assert.equal(t.hub.log.filter((e) => e.path.endsWith('/sessions')).length, 1, 'reopening keeps the chat');
    } finally {
      await t.teardown();
    }
  });
});
