// Headless Chromium against a real `confide serve`: a customer's page on another loopback origin,
// with a strict CSP, embeds the widget served by Confide at /widget/v1/confide.js with its SRI
// hash; the visitor opens the bubble by keyboard, gets the bot's greeting, sends a message and
// gets the reply. A page on an origin the bot does not allow cannot start a chat.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startConfide } from './lib/confide.mjs';
import {
  focusedInWidget, launchBrowser, openWatched, sleep, sriOf, startHostPage, tabToLauncher, waitFor, widget, WIDGET_FILE,
} from './lib/harness.mjs';

const GREETING = 'Hello from Acme';
const FALLBACK = 'Let me find someone who knows';

describe('widget served by confide', () => {
  let failed = false;
  // A test whose failure also prints the end of the server's log.
  const check = (name, fn) => test(name, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      failed = true;
      throw err;
    }
  });
  let confide;
  let owner;
  let bot;
  let browser;
  let integrity;
  const open = [];

  before(async () => {
    confide = await startConfide();
    owner = await confide.owner();
    bot = await confide.createBot(owner, 'Support');
    await confide.chatSettings(owner, bot.id, {
      greeting: GREETING,
      fallback_reply: FALLBACK,
      allowed_domains: ['localhost'],
    });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const close of open.reverse()) await close().catch(() => {});
    await browser?.close();
    if (confide) {
      if (failed) console.error(`--- confide log (last lines) ---\n${confide.logTail(25)}`);
      await confide.stop();
    }
  });

  check('GET /widget/v1/confide.js: JavaScript, CORS for SRI, and the published integrity matches', async () => {
    const res = await fetch(`${confide.base}/widget/v1/confide.js`, { headers: { origin: 'http://localhost:1' } });
    assert.equal(res.status, 200, 'the widget is served at /widget/v1/confide.js');
    assert.match(res.headers.get('content-type') ?? '', /^text\/javascript\b/);
    assert.equal(res.headers.get('access-control-allow-origin'), '*', 'crossorigin + integrity need CORS');
    const body = Buffer.from(await res.arrayBuffer());
    integrity = sriOf(body);
    assert.ok(body.equals(readFileSync(WIDGET_FILE)), 'confide serves web/widget/confide.js as it is (rebuild the binary?)');
    const published = await fetch(`${confide.base}/widget/v1/integrity`);
    assert.equal(published.status, 200, 'the SRI hash is published at /widget/v1/integrity');
    const json = await published.json();
    assert.equal(json.integrity, integrity, 'the published SRI hash is the served file\'s');
    assert.equal(json.src, '/widget/v1/confide.js');
  });

  check('CORS preflights of the chat endpoints are answered (the widget sends JSON and X-Chat-Token)', async () => {
    for (const path of [`/chat/v1/${bot.key}/sessions`, '/chat/v1/auth', '/chat/v1/greeting', '/chat/v1/messages']) {
      const res = await fetch(`${confide.base}${path}`, {
        method: 'OPTIONS',
        headers: {
          origin: 'http://localhost:1234',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'content-type,x-chat-token',
        },
      });
      assert.ok(res.status === 200 || res.status === 204, `OPTIONS ${path}: ${res.status}`);
      assert.equal(res.headers.get('access-control-allow-origin'), 'http://localhost:1234', `OPTIONS ${path}`);
      assert.match(res.headers.get('access-control-allow-headers') ?? '', /x-chat-token/i, `OPTIONS ${path}`);
      assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/, `OPTIONS ${path}`);
    }
  });

  check('strict-CSP page on an allowed origin: keyboard open, greeting, message and reply, no CSP violation', async () => {
    assert.ok(integrity, 'the widget was fetched');
    const site = await startHostPage({ hostname: 'localhost', server: confide.base, bot: bot.key, integrity });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    const sessionAnswer = t.page
      .waitForResponse((res) => /\/chat\/v1\/[^/]+\/sessions$/.test(res.url()) && res.request().method() === 'POST')
      .then((res) => res.json());

    // Nothing happens before the visitor asks for it.
    await w.launcher.waitFor({ state: 'visible' });
    assert.equal(await w.panel.isVisible(), false);
    assert.deepEqual(t.sockets, []);

    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    assert.equal(await w.panel.isVisible(), true);
    assert.equal(await focusedInWidget(t.page), 'input', 'the focus moves to the message field');
    assert.equal(await w.launcher.getAttribute('aria-expanded'), 'true');
    assert.equal(await w.log.getAttribute('aria-live'), 'polite');

    await waitFor(async () => (await w.status.getAttribute('data-state')) === 'connected', {
      what: 'the realtime connection', timeout: 15000,
    });
    assert.equal(await w.status.textContent(), 'Connected');
    assert.deepEqual(t.sockets, [`ws://127.0.0.1:${confide.port}/app/${bot.key}?protocol=7&client=confide-widget&version=1.0`]);

    await waitFor(async () => (await w.messages.count()) >= 1, { what: 'the greeting' });
    assert.deepEqual(await w.messages.allTextContents(), [`Bot: ${GREETING}`]);

    await t.page.keyboard.type('Where is my order?');
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 3, { what: 'the message and the reply' });
    await sleep(500); // the channel copies must not add duplicates
    assert.deepEqual(await w.messages.allTextContents(), [
      `Bot: ${GREETING}`,
      'You: Where is my order?',
      `Bot: ${FALLBACK}`,
    ]);
    assert.equal(await w.input.inputValue(), '');
    assert.equal(await focusedInWidget(t.page), 'input');
    assert.equal(await w.error.isVisible(), false);

    // Escape closes and the focus goes back to the launcher.
    await t.page.keyboard.press('Escape');
    assert.equal(await w.panel.isVisible(), false);
    assert.equal(await focusedInWidget(t.page), 'launcher');

    assert.deepEqual(await t.violations(), [], 'no securitypolicyviolation event');
    await sleep(300);
    assert.deepEqual(site.reports, [], 'no CSP report');
    assert.deepEqual(t.problems, [], 'no console error or warning');
    // The chat token stays in the widget's memory: not in storage or cookies the page can read.
    const token = (await sessionAnswer).token;
    assert.ok(token && token.length > 20);
    const kept = await t.page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }) + document.cookie);
    assert.ok(!kept.includes(token));
    assert.deepEqual(Object.keys(JSON.parse(kept)), [`confide.visitor.${bot.key}`]);
  });

  check('a page on an origin the bot does not allow shows the refusal and starts no chat', async () => {
    assert.ok(integrity, 'the widget was fetched');
    const site = await startHostPage({ host: '127.0.0.1', server: confide.base, bot: bot.key, integrity });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const answers = [];
    t.page.on('response', async (res) => {
      if (res.url().includes('/chat/v1/')) answers.push({ url: res.url(), status: res.status(), body: await res.text().catch(() => '') });
    });
    const w = widget(t.page);
    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    await w.error.waitFor({ state: 'visible', timeout: 10000 });
    assert.equal(await w.error.textContent(), 'Chat is not available on this website.');
    assert.equal(await w.status.getAttribute('data-state'), 'offline');
    assert.equal(await w.input.isDisabled(), true);
    assert.equal(await w.send.isDisabled(), true);
    await sleep(1000);
    assert.equal(answers.length, 1, JSON.stringify(answers));
    assert.match(answers[0].url, /\/chat\/v1\/[^/]+\/sessions$/);
    assert.equal(answers[0].status, 403);
    assert.equal(JSON.parse(answers[0].body).error.code, 'origin_not_allowed');
    assert.deepEqual(t.sockets, [], 'no realtime connection');
    assert.equal(await w.messages.count(), 0);
    assert.deepEqual(await t.violations(), []);
    // Chromium logs the refused fetch ("Failed to load resource: 403"); nothing else.
    assert.deepEqual(t.problems.filter((p) => !/status of 403/.test(p)), []);
    // Going around the widget does not help: the hub's handshake checks the page's Origin too.
    const direct = await t.page.evaluate((url) => new Promise((resolve) => {
      const frames = [];
      const ws = new WebSocket(url);
      ws.onmessage = (e) => frames.push(String(e.data));
      ws.onclose = (e) => resolve({ code: e.code, frames });
      setTimeout(() => resolve({ code: 'open after 5 s', frames }), 5000);
    }), `ws://127.0.0.1:${confide.port}/app/${bot.key}?protocol=7&client=js&version=8.4.0`);
    assert.ok(!direct.frames.some((f) => f.includes('pusher:connection_established')), JSON.stringify(direct));
  });

  check('survives a server restart: reconnects, re-authorizes, and renders bot markup as text', async () => {
    const site = await startHostPage({ hostname: 'localhost', server: confide.base, bot: bot.key, integrity });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) === 1, { what: 'the greeting', timeout: 15000 });

    await confide.halt();
    await waitFor(async () => ['reconnecting', 'offline'].includes(await w.status.getAttribute('data-state')), {
      what: 'the widget noticing the drop',
    });
    await confide.start();
    await waitFor(async () => (await w.status.getAttribute('data-state')) === 'connected', {
      what: 'reconnected', timeout: 40000, interval: 200,
    });

    const markup = '<img src=x id=pwned><b>bold</b> & <script>alert(1)</script>';
    const login = await confide.api('POST', '/api/v1/auth/login', { body: { email: 'o@example.com', password: 'a long passphrase 42' } });
    await confide.chatSettings({ ...owner, accessToken: login.json.access_token }, bot.id, {
      greeting: GREETING, fallback_reply: markup, allowed_domains: ['localhost'],
    });
    await w.input.fill('still there?');
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.allTextContents()).includes(`Bot: ${markup}`), { what: 'the markup reply' });
    assert.equal(await w.root.locator('img, b, script').count(), 0, 'markup is shown as text, never parsed');
    assert.equal(await t.page.evaluate(() => document.getElementById('pwned')), null);
    assert.deepEqual(await t.violations(), []);
  });
});
