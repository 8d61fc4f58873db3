// The bot's avatar in the widget, in headless Chromium on strict-CSP pages: `confide serve` with an
// avatar set through the API. On a page whose CSP lets it take pictures from the server, the
// avatar loads in the widget's heading and beside the bot's messages; on a page whose CSP does not,
// the blocked picture is removed rather than shown broken, and the chat works as without one.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startConfide } from './lib/confide.mjs';
import {
  launchBrowser, openWatched, sleep, sriOf, startHostPage, tabToLauncher, waitFor, widget,
} from './lib/harness.mjs';

const PNG = fs.readFileSync(new URL('../../crates/confide-security/tests/data/avatar-3x2.png', import.meta.url));

describe('the bot avatar in the widget (sqlite)', () => {
  let confide;
  let owner;
  let bot;
  let browser;
  let integrity;
  const open = [];

  before(async () => {
    confide = await startConfide({ backend: 'sqlite' });
    owner = await confide.owner();
    bot = await confide.createBot(owner, 'Support');
    await confide.chatSettings(owner, bot.id, { greeting: 'Hi!', fallback_reply: 'Sorry?', allowed_domains: ['localhost'] });
    const form = new FormData();
    form.append('file', new Blob([PNG], { type: 'image/png' }), 'face.png');
    const res = await fetch(`${confide.base}/api/v1/orgs/${owner.orgId}/bots/${bot.id}/avatar`, {
      method: 'PUT', headers: { authorization: `Bearer ${owner.accessToken}` }, body: form,
    });
    assert.equal(res.status, 200, await res.text());
    const script = await fetch(`${confide.base}/widget/v1/confide.js`);
    integrity = sriOf(Buffer.from(await script.arrayBuffer()));
    browser = await launchBrowser();
  });

  after(async () => {
    for (const close of open.reverse()) await close().catch(() => {});
    await browser?.close();
    await confide?.stop();
  });

  /** Opens the widget on a page and waits for the greeting. */
  async function chat(images) {
    const site = await startHostPage({ hostname: 'localhost', server: confide.base, bot: bot.key, integrity, images });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    await w.launcher.waitFor({ state: 'visible' });
    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 1, { what: 'the greeting', timeout: 15000 });
    return { t, w };
  }

  test('on a page that allows it, the avatar loads in the heading and beside the bot', async () => {
    const { t, w } = await chat([new URL(confide.base).origin]);
    const head = w.root.locator('header img.avatar');
    await waitFor(async () => head.evaluate((img) => !img.hidden && img.complete && img.naturalWidth === 3),
      { what: 'the avatar in the heading', timeout: 15000 });
    assert.match(await head.getAttribute('src'), /\/widget\/v1\/bots\/[^/]+\/avatar/);
    assert.equal(await head.getAttribute('alt'), '', 'decorative: the heading names the bot');

    await t.page.keyboard.type('Anyone there?');
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 3, { what: 'the reply', timeout: 15000 });
    const beside = w.root.locator('.msg.bot img.msg-avatar');
    await waitFor(async () => (await beside.count()) >= 1
      && beside.first().evaluate((img) => img.complete && img.naturalWidth === 3),
    { what: 'the avatar beside the reply', timeout: 15000 });
    assert.equal(await w.root.locator('.msg.visitor img').count(), 0, 'none beside the visitor');
    const texts = await w.messages.allTextContents();
    assert.equal(texts[texts.length - 1], 'Bot: Sorry?', 'the picture adds no text');
    assert.deepEqual(await t.violations(), [], 'no securitypolicyviolation event');
  });

  test('on a page that does not allow it, no broken picture is left and the chat works', async () => {
    const { t, w } = await chat([]);
    // The page's CSP refuses the picture: one report, then the widget takes it away.
    await waitFor(async () => (await t.violations()).some((v) => v.directive === 'img-src'),
      { what: 'the refused picture', timeout: 15000 });
    const head = w.root.locator('header img.avatar');
    await waitFor(async () => head.evaluate((img) => img.hidden && !img.getAttribute('src')),
      { what: 'the avatar taken away', timeout: 15000 });
    await t.page.keyboard.type('Anyone there?');
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 3, { what: 'the reply', timeout: 15000 });
    await sleep(300);
    assert.equal(await w.root.locator('img.msg-avatar').count(), 0, 'no picture beside the bot');
    const violations = await t.violations();
    assert.ok(violations.every((v) => v.directive === 'img-src'), JSON.stringify(violations));
  });
});
