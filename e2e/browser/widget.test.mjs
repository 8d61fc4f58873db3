// Headless Chromium against a real `confide serve`: a customer's page on another loopback origin,
// with a strict CSP, embeds the widget served by Confide at /widget/v1/confide.js with its SRI
// hash; the visitor opens the bubble by keyboard, gets the bot's greeting, sends a message and
// gets the reply. A page on an origin the bot does not allow cannot start a chat. After losing its
// connection the widget catches up with what was said meanwhile. A signed-in customer's page has
// its visitor verified with a JWT its backend signs (the test plays that backend).

import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { backends, startConfide } from './lib/confide.mjs';
import { startProxy } from './lib/proxy.mjs';
import {
  focusedInWidget, launchBrowser, openWatched, sleep, sriOf, startHostPage, tabToLauncher, waitFor, widget, WIDGET_FILE,
} from './lib/harness.mjs';

const GREETING = 'Hello from Acme';
const FALLBACK = 'Let me find someone who knows';

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** The customer's backend: an ES256 key pair, and a JWT for its signed-in user on request. */
function customerBackend() {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }),
    issued: [],
    sign(claims) {
      const input = `${b64url({ alg: 'ES256', typ: 'JWT' })}.${b64url(claims)}`;
      const signature = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
      const jwt = `${input}.${signature.toString('base64url')}`;
      this.issued.push(jwt);
      return jwt;
    },
  };
}

// The customer's page script (an external file, after the widget's tag): asks its backend.
const SIGNED_IN_SCRIPT = `window.confideOptions = {
  getAuthToken: (chatId) => fetch('/chat-identity?chat=' + encodeURIComponent(chatId)).then((res) => {
    if (!res.ok) throw new Error('not signed in');
    return res.text();
  }),
};
`;

for (const backend of backends()) describe(`widget served by confide (${backend})`, () => {
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
    confide = await startConfide({ backend });
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

  check('nudges: the page rule offers one without starting a chat; its form, an agent\'s nudge and a handover', async () => {
    assert.ok(integrity, 'the widget was fetched');
    const api = (method, path, body) => confide.api(method, `/api/v1/orgs/${owner.orgId}/bots/${nudger.id}${path}`, {
      token: owner.accessToken, body,
    });
    const nudger = await confide.createBot(owner, 'Nudger');
    await confide.chatSettings(owner, nudger.id, { greeting: GREETING, fallback_reply: FALLBACK, allowed_domains: ['localhost'] });
    // A receiver that is never reached: the delivery log shows what was queued for it.
    const hook = await api('POST', '/webhooks', { url: 'https://hooks.example.com/nudges', events: ['nudge.submitted'] });
    assert.equal(hook.status, 201, hook.text);
    const newsletter = await api('POST', '/nudges', {
      name: 'Newsletter', title: 'Stay in the loop', text: 'News once a month.',
      form: { label: 'Your email', input: 'email', button: 'Sign up' },
      rules: { paths: ['/'], seconds_on_page: 1 },
    });
    assert.equal(newsletter.status, 201, newsletter.text);
    const survey = await api('POST', '/nudges', { name: 'Survey', title: 'How are we doing?', text: '<b>Tell us</b>' });
    assert.equal(survey.status, 201, survey.text);

    const site = await startHostPage({ hostname: 'localhost', server: confide.base, bot: nudger.key, integrity });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    const teaser = w.root.locator('button.teaser');
    await teaser.waitFor({ state: 'visible', timeout: 10000 });
    assert.equal(await teaser.textContent(), 'Stay in the loop');
    assert.deepEqual(t.sockets, [], 'offering a nudge starts no chat');

    const sessionAnswer = t.page
      .waitForResponse((res) => /\/chat\/v1\/[^/]+\/sessions$/.test(res.url()) && res.request().method() === 'POST')
      .then((res) => res.json());
    await teaser.click();
    assert.equal(await w.panel.isVisible(), true);
    assert.equal(await teaser.isVisible(), false);
    const cards = w.root.locator('section.nudge');
    await cards.first().waitFor({ state: 'visible' });
    assert.equal(await cards.first().locator('.nudge-text').textContent(), 'News once a month.');
    await w.root.getByLabel('Your email').fill('not an address');
    await w.root.getByRole('button', { name: 'Sign up' }).click();
    await waitFor(async () => (await cards.first().locator('.nudge-status').textContent()) !== '', { what: 'the refusal' });
    assert.equal(await cards.first().locator('.nudge-status').textContent(), 'Please enter a valid email address.');
    await w.root.getByLabel('Your email').fill('ann@example.com');
    await w.root.getByRole('button', { name: 'Sign up' }).click();
    await waitFor(async () => (await cards.first().locator('.nudge-status').textContent()) === 'Thank you!', { what: 'the thanks' });
    const deliveries = await api('GET', `/webhooks/${hook.json.webhook.id}/deliveries`);
    assert.deepEqual(deliveries.json.deliveries.map((d) => d.event), ['nudge.submitted']);

    // An agent sends the survey to this chat: its text in the formatting subset, built as elements.
    const chatId = (await sessionAnswer).chat_id;
    await waitFor(async () => (await w.status.getAttribute('data-state')) === 'connected', { what: 'the connection', timeout: 15000 });
    const sent = await api('POST', `/nudges/${survey.json.id}/send`, { chat_id: chatId });
    assert.equal(sent.status, 202, sent.text);
    await waitFor(async () => (await cards.count()) === 2, { what: 'the agent\'s nudge' });
    assert.equal(await cards.nth(1).locator('.nudge-text').textContent(), 'Tell us');
    assert.equal(await cards.nth(1).locator('.nudge-text b').textContent(), 'Tell us');

    // Asking for a person, an agent taking the chat and answering.
    const human = w.root.getByRole('button', { name: 'Talk to a person' });
    await human.click();
    const notes = w.root.locator('p.note');
    await waitFor(async () => (await notes.allTextContents()).includes('Waiting for a person to join\u2026'), { what: 'the request' });
    assert.equal(await human.isVisible(), false);
    const taken = await api('POST', `/handovers/${chatId}/take`);
    assert.equal(taken.status, 200, taken.text);
    await waitFor(async () => (await notes.allTextContents()).includes('A person has joined the chat.'), { what: 'the agent' });
    const said = await api('POST', `/handovers/${chatId}/messages`, { text: 'Hi, I am Kim.' });
    assert.equal(said.status, 201, said.text);
    await waitFor(async () => (await w.messages.allTextContents()).includes('Agent: Hi, I am Kim.'), { what: 'the agent\'s message' });

    assert.deepEqual(await t.violations(), [], 'no securitypolicyviolation event');
    // The refused answer is a 422 Chromium logs as a failed load; nothing else.
    assert.deepEqual(t.problems.filter((p) => !/status of 422/.test(p)), []);
  });

  check('buttons: a dialogue button answers with its dialogue, once; a link button opens a new tab; the fallback offers a human', async () => {
    const buttons = await confide.createBot(owner, 'Buttons');
    const api = (method, path, body) => confide.api(method, `/api/v1/orgs/${owner.orgId}/bots/${buttons.id}${path}`, {
      token: owner.accessToken, body,
    });
    await confide.chatSettings(owner, buttons.id, {
      greeting: GREETING, fallback_reply: FALLBACK, allowed_domains: ['localhost'], fallback_human_button: 'Talk to a person',
    });
    const track = await api('POST', '/dialogues', { name: 'Track', patterns: ['^track$'], replies: ['Your parcel is <b>on its way</b>.'] });
    assert.equal(track.status, 201, track.text);
    const order = await api('POST', '/dialogues', {
      name: 'Order', patterns: ['(?i)order'], replies: ['What would you like to do?'],
      buttons: [{ label: 'Track it', dialogue_id: track.json.id }, { label: 'Help centre', url: 'https://help.example.com/orders' }],
    });
    assert.equal(order.status, 201, order.text);

    const site = await startHostPage({ hostname: 'localhost', server: confide.base, bot: buttons.key, integrity });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    await w.launcher.click();
    await waitFor(async () => (await w.messages.count()) >= 1, { what: 'the greeting', timeout: 15000 });
    await w.input.fill('about my order');
    await t.page.keyboard.press('Enter');
    const offered = w.root.locator('.msg.bot .choices');
    await offered.waitFor({ state: 'visible' });
    const link = offered.locator('a.choice');
    assert.equal(await link.textContent(), 'Help centre');
    assert.equal(await link.getAttribute('href'), 'https://help.example.com/orders');
    assert.equal(await link.getAttribute('target'), '_blank');
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer nofollow');

    await offered.getByRole('button', { name: 'Track it' }).click();
    await waitFor(async () => (await w.messages.allTextContents()).includes('Bot: Your parcel is on its way.'), { what: 'the dialogue the button leads to' });
    assert.equal(await w.messages.last().locator('b').textContent(), 'on its way');
    assert.ok((await w.messages.allTextContents()).includes('You: Track it'));
    assert.equal(await offered.getByRole('button', { name: 'Track it' }).isDisabled(), true, 'pressed once');

    // Nothing answers: the fallback offers a human, and pressing asks for one.
    await w.input.fill('qwertyuiop');
    await t.page.keyboard.press('Enter');
    const human = w.root.locator('.msg.bot .choices').last().getByRole('button', { name: 'Talk to a person' });
    await human.waitFor({ state: 'visible' });
    await human.click();
    await waitFor(async () => (await w.root.locator('.note').allTextContents()).includes('Waiting for a person to join\u2026'),
      { what: 'the handover requested note' });
    assert.ok((await w.messages.allTextContents()).includes('You: Talk to a person'));
    const queue = await api('GET', '/handovers');
    assert.equal(queue.status, 200, queue.text);
    assert.equal(queue.json.handovers.length, 1);
    assert.deepEqual(await t.violations(), []);
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
    // The page's nudge rules are read on load, before any chat (maybe before this listener was
    // attached): refused to this page too.
    const rulesRead = answers.filter((a) => /\/nudges$/.test(a.url));
    assert.ok(rulesRead.every((a) => a.status === 403), JSON.stringify(rulesRead));
    const rules = await t.page.evaluate((url) => fetch(url).then((r) => r.status), `${confide.base}/chat/v1/${bot.key}/nudges`);
    assert.equal(rules, 403, 'the nudge rules are refused to this page');
    answers.splice(0, answers.length, ...answers.filter((a) => !/\/nudges$/.test(a.url)));
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

  check('survives a server restart: reconnects, re-authorizes, and renders only the bot\'s formatting subset', async () => {
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

    const markup = '<img src=x id=pwned><b>bold</b> & <script>alert(1)</script><a href="javascript:alert(2)">trap</a> ' +
      '<a href="https://example.com/help" onclick="alert(3)">help</a>';
    const login = await confide.api('POST', '/api/v1/auth/login', { body: { email: 'o@example.com', password: 'a long passphrase 42' } });
    await confide.chatSettings({ ...owner, accessToken: login.json.access_token }, bot.id, {
      greeting: GREETING, fallback_reply: markup, allowed_domains: ['localhost'],
    });
    // A visitor's own markup is text, however it looks.
    await w.input.fill('still there? <b>x</b>');
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.allTextContents()).includes('Bot: bold & trap help'), { what: 'the formatted reply' });
    assert.ok((await w.messages.allTextContents()).includes('You: still there? <b>x</b>'));
    const reply = w.messages.last();
    assert.equal(await reply.locator('b').textContent(), 'bold');
    // The widget's own avatar pictures (hidden: this bot has none) are not from the markup.
    assert.equal(await w.root.locator('img:not(.avatar):not(.msg-avatar), script, [onclick]').count(), 0,
      'nothing outside the subset is built');
    assert.equal(await w.root.locator('.msg.visitor b').count(), 0);
    const links = reply.locator('a');
    assert.equal(await links.count(), 2);
    assert.equal(await links.first().getAttribute('href'), null, 'a javascript: link keeps no target');
    assert.equal(await links.last().getAttribute('href'), 'https://example.com/help');
    assert.equal(await links.last().getAttribute('target'), '_blank');
    assert.equal(await links.last().getAttribute('rel'), 'noopener noreferrer nofollow');
    assert.equal(await t.page.evaluate(() => document.getElementById('pwned')), null);
    assert.deepEqual(await t.violations(), []);
  });

  check('after a lost connection the widget shows, once, what was said while it was away', async () => {
    // Its own server, whose public URL is a proxy the test can cut: the network between the two.
    const proxy = await startProxy();
    open.push(proxy.close);
    const server = await startConfide({ backend, env: { CONFIDE_PUBLIC_URL: proxy.url } });
    open.push(() => server.stop());
    proxy.targetPort = server.port;
    const boss = await server.owner('p@example.com', 'Proxied');
    const proxiedBot = await server.createBot(boss, 'Support');
    await server.chatSettings(boss, proxiedBot.id, { greeting: GREETING, fallback_reply: FALLBACK, allowed_domains: ['localhost'] });
    const site = await startHostPage({
      hostname: 'localhost', server: server.base, bot: proxiedBot.key, integrity, connect: [proxy.url, proxy.url.replace('http', 'ws')],
    });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    const sessionAnswer = t.page
      .waitForResponse((res) => /\/chat\/v1\/[^/]+\/sessions$/.test(res.url()) && res.request().method() === 'POST')
      .then((res) => res.json());
    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.status.getAttribute('data-state')) === 'connected', { what: 'connected', timeout: 15000 });
    await waitFor(async () => (await w.messages.count()) === 1, { what: 'the greeting' });
    assert.deepEqual(t.sockets, [`ws://127.0.0.1:${proxy.port}/app/${proxiedBot.key}?protocol=7&client=confide-widget&version=1.0`]);

    proxy.cut();
    await waitFor(async () => (await w.status.getAttribute('data-state')) === 'reconnecting', { what: 'the widget noticing the drop' });
    // The same chat goes on elsewhere (another tab of the visitor's) while this page is cut off.
    const { token } = await sessionAnswer;
    const sent = await fetch(`${server.base}/chat/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-chat-token': token, origin: site.origin },
      body: JSON.stringify({ text: 'Sent while you were away' }),
    });
    assert.equal(sent.status, 202, await sent.clone().text());
    assert.equal(await w.messages.count(), 1, 'nothing reached the cut-off page');
    const catchUp = t.page.waitForResponse(
      (res) => res.url().endsWith('/chat/v1/messages') && res.request().method() === 'GET',
      { timeout: 15000 },
    );

    proxy.release();
    assert.equal((await catchUp).status(), 200);
    await waitFor(async () => (await w.messages.count()) >= 3, { what: 'the missed messages', timeout: 15000 });
    assert.deepEqual(await w.messages.allTextContents(), [`Bot: ${GREETING}`, 'You: Sent while you were away', `Bot: ${FALLBACK}`]);
    await waitFor(async () => (await w.status.getAttribute('data-state')) === 'connected', { what: 'connected again' });
    assert.equal(await w.error.isVisible(), false);
    assert.deepEqual(await t.violations(), []);
  });

  check('confideOptions.language: the greeting and replies come in the page\'s language', async () => {
    const nordic = await confide.createBot(owner, 'Nordic');
    await confide.chatSettings(owner, nordic.id, {
      greeting: GREETING, fallback_reply: FALLBACK, allowed_domains: ['localhost'],
      languages: ['en', 'nb'], greetings: { nb: 'Hei fra Acme' }, fallback_replies: { nb: 'Det vet jeg ikke' },
    });
    const site = await startHostPage({
      hostname: 'localhost', server: confide.base, bot: nordic.key, integrity,
      hostScript: "window.confideOptions = { language: 'nb-NO', context: { plan: 'gold', seats: 3, nested: { x: 1 } } };\n",
    });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    const bodies = [];
    t.page.on('request', (req) => {
      if (req.method() === 'POST' && req.url().includes('/chat/v1/') && !req.url().endsWith('/auth')) {
        bodies.push({ path: new URL(req.url()).pathname, body: JSON.parse(req.postData() || '{}') });
      }
    });

    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 1, { what: 'the greeting', timeout: 15000 });
    await w.input.fill('Hvor er pakken min?');
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 3, { what: 'the message and the reply' });
    assert.deepEqual(await w.messages.allTextContents(), ['Bot: Hei fra Acme', 'You: Hvor er pakken min?', 'Bot: Det vet jeg ikke']);
    const session = bodies.find((b) => b.path.endsWith('/sessions'));
    const message = bodies.find((b) => b.path === '/chat/v1/messages');
    assert.equal(session?.body.language_code, 'nb-NO', 'the session asks for the page\'s language');
    assert.equal(message?.body.language_code, 'nb-NO', 'so does every message');
    // confideOptions.context goes with the session: plain values only.
    assert.deepEqual(session?.body.context, { plan: 'gold', seats: 3 });
    assert.deepEqual(t.problems, []);
    assert.deepEqual(await t.violations(), []);
  });

  check('a signed-in customer: the backend\'s JWT verifies the visitor, who then chats with the verified token', async () => {
    const members = await confide.createBot(owner, 'Members');
    const backend = customerBackend();
    const key = await confide.api('POST', `/api/v1/orgs/${owner.orgId}/bots/${members.id}/identity-keys`, {
      token: owner.accessToken, body: { name: 'shop backend', public_key_pem: backend.publicKeyPem },
    });
    assert.equal(key.status, 201, key.text);
    assert.equal(key.json.algorithm, 'ES256');
    await confide.chatSettings(owner, members.id, {
      greeting: GREETING, fallback_reply: FALLBACK, allowed_domains: ['localhost'], require_identity: true,
    });

    const site = await startHostPage({
      hostname: 'localhost', server: confide.base, bot: members.key, integrity, hostScript: SIGNED_IN_SCRIPT,
      routes: {
        '/chat-identity': (req, res) => {
          const chatId = new URL(req.url, 'http://host').searchParams.get('chat');
          const now = Math.floor(Date.now() / 1000);
          const jwt = backend.sign({ aud: members.key, sub: 'customer-7', iat: now, exp: now + 300, chat_id: chatId });
          res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(jwt);
        },
      },
    });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    const chatRequests = [];
    t.page.on('request', (req) => {
      if (req.url().includes('/chat/v1/')) chatRequests.push({ path: new URL(req.url()).pathname, method: req.method(), token: req.headers()['x-chat-token'] });
    });
    const sessionAnswer = t.page
      .waitForResponse((res) => /\/chat\/v1\/[^/]+\/sessions$/.test(res.url()) && res.request().method() === 'POST')
      .then((res) => res.json());
    const identityAnswer = t.page
      .waitForResponse((res) => res.url().endsWith('/chat/v1/identity') && res.request().method() === 'POST', { timeout: 15000 })
      .then(async (res) => ({ status: res.status(), body: await res.json() }));

    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    const identity = await identityAnswer;
    assert.equal(identity.status, 200, JSON.stringify(identity.body));
    assert.equal(identity.body.verified, true);
    assert.equal(identity.body.user_id, 'customer-7');
    await waitFor(async () => (await w.messages.count()) >= 1, { what: 'the greeting', timeout: 15000 });
    await w.input.fill('Where is my order?');
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 3, { what: 'the message and the reply' });
    assert.deepEqual(await w.messages.allTextContents(), [`Bot: ${GREETING}`, 'You: Where is my order?', `Bot: ${FALLBACK}`]);
    assert.equal(await w.error.isVisible(), false);

    const session = await sessionAnswer;
    assert.equal(backend.issued.length, 1);
    const jwt = backend.issued[0];
    // Verified with the new chat's token, and from then on the identity-bound one only.
    const posts = chatRequests.filter((r) => r.method === 'POST');
    assert.deepEqual(posts.map((r) => r.path), [
      `/chat/v1/${members.key}/sessions`, '/chat/v1/identity', '/chat/v1/auth', '/chat/v1/greeting', '/chat/v1/messages',
    ]);
    assert.equal(posts[1].token, session.token);
    for (const r of posts.slice(2)) assert.equal(r.token, identity.body.token, `${r.path} uses the verified chat token`);
    // The old token no longer opens the chat.
    const stale = await fetch(`${confide.base}/chat/v1/messages`, { headers: { 'x-chat-token': session.token, origin: site.origin } });
    assert.equal(stale.status, 403);
    // The JWT stays out of the page, its URLs and its console.
    const traces = await t.page.evaluate(() => [location.href, document.cookie, JSON.stringify({ ...localStorage }),
      JSON.stringify({ ...sessionStorage }), document.documentElement.outerHTML,
      ...[...document.querySelector('confide-chat').shadowRoot.querySelectorAll('*')].flatMap((el) => [el.textContent, el.value ?? '',
        ...[...el.attributes].map((a) => a.value)])].join('\n'));
    assert.ok(!traces.includes(jwt));
    assert.ok(!t.requests.some((r) => r.includes(jwt)));
    assert.deepEqual(t.problems, []);
    assert.deepEqual(await t.violations(), []);

    // A visitor the page cannot vouch for is turned away by this bot.
    const anonymous = await startHostPage({ hostname: 'localhost', server: confide.base, bot: members.key, integrity });
    open.push(anonymous.close);
    const u = await openWatched(browser, anonymous.url);
    open.push(() => u.context.close());
    const v = widget(u.page);
    await tabToLauncher(u.page);
    await u.page.keyboard.press('Enter');
    await v.error.waitFor({ state: 'visible', timeout: 10000 });
    assert.equal(await v.error.textContent(), 'Please sign in to chat with us.');
    assert.equal(await v.input.isDisabled(), true);
    assert.equal(await v.messages.count(), 0);
  });
});
