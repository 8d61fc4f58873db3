// A generated answer in the widget, in headless Chromium on a strict-CSP page: `confide serve` with
// [knowledge.llm] pointing at a local server that speaks OpenAI's streamed chat completions (slowly,
// so the pieces can be seen arrive) answers from an uploaded text file. The visitor sees the answer
// grow in one bubble as text (markup in the model's words stays text), then the stored answer with
// its cited source takes that bubble's place: one bubble, no duplicate, no CSP violation.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startConfide } from './lib/confide.mjs';
import {
  launchBrowser, openWatched, sleep, sriOf, startHostPage, tabToLauncher, waitFor, widget,
} from './lib/harness.mjs';

const PIECES = ['Returns are free ', 'within <b>30 days</b>', ' of delivery ', '[1].'];

/** The model: every answer streamed a piece every 400 ms. */
function startModel() {
  const asked = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', async () => {
      asked.push(JSON.parse(body));
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const event = (data) => res.write(`data: ${JSON.stringify(data)}\n\n`);
      for (const content of PIECES) {
        event({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content }, finish_reason: null }] });
        await sleep(400);
      }
      event({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
      event({ choices: [], usage: { prompt_tokens: 90, completion_tokens: 12, total_tokens: 102 } });
      res.end('data: [DONE]\n\n');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      base: `http://127.0.0.1:${server.address().port}/v1`,
      asked,
      close: () => new Promise((done) => server.close(done)),
    }));
  });
}

describe('a generated answer streamed into the widget (sqlite)', () => {
  let model;
  let confide;
  let owner;
  let bot;
  let browser;
  const open = [];

  before(async () => {
    model = await startModel();
    confide = await startConfide({
      backend: 'sqlite',
      env: { CONFIDE_KNOWLEDGE_LLM_BASE_URL: model.base, CONFIDE_KNOWLEDGE_LLM_MODEL: 'fake-model' },
    });
    owner = await confide.owner();
    bot = await confide.createBot(owner, 'Support');
    await confide.chatSettings(owner, bot.id, { greeting: 'Hi!', fallback_reply: 'Sorry?', allowed_domains: ['localhost'] });
    const form = new FormData();
    form.append('file', new Blob(['Returns are free within 30 days of delivery.']), 'returns.txt');
    const knowledge = `/api/v1/orgs/${owner.orgId}/bots/${bot.id}/knowledge`;
    const res = await fetch(`${confide.base}${knowledge}/files`, {
      method: 'POST', headers: { authorization: `Bearer ${owner.accessToken}` }, body: form,
    });
    const text = await res.text();
    assert.equal(res.status, 202, text);
    const { id } = JSON.parse(text);
    await waitFor(async () => {
      const source = await confide.api('GET', `${knowledge}/sources/${id}`, { token: owner.accessToken });
      assert.notEqual(source.json.status, 'rejected', source.text);
      return source.json.status === 'ready';
    }, { what: 'the file to be learned', timeout: 30000 });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const close of open.reverse()) await close().catch(() => {});
    await browser?.close();
    await confide?.stop();
    await model?.close();
  });

  test('the answer grows in one bubble as text, then the stored answer with its source replaces it', async () => {
    const script = await fetch(`${confide.base}/widget/v1/confide.js`);
    const integrity = sriOf(Buffer.from(await script.arrayBuffer()));
    const site = await startHostPage({ hostname: 'localhost', server: confide.base, bot: bot.key, integrity });
    open.push(site.close);
    const t = await openWatched(browser, site.url);
    open.push(() => t.context.close());
    const w = widget(t.page);
    await w.launcher.waitFor({ state: 'visible' });
    await tabToLauncher(t.page);
    await t.page.keyboard.press('Enter');
    await waitFor(async () => (await w.messages.count()) >= 1, { what: 'the greeting', timeout: 15000 });

    await t.page.keyboard.type('How long do I have for returns?');
    await t.page.keyboard.press('Enter');
    const streaming = w.root.locator('.msg.streaming');
    // Part of the answer is there before the rest is written.
    await waitFor(async () => (await streaming.count()) === 1
      && (await streaming.textContent()).includes('within <b>30 days</b>'), { what: 'the answer growing', timeout: 15000 });
    const partial = await streaming.textContent();
    assert.ok(!partial.includes('of delivery'), `not all of it yet: ${partial}`);
    assert.equal(await streaming.locator('b').count(), 0, 'the pieces are text, never markup');

    await waitFor(async () => (await streaming.count()) === 0, { what: 'the stored answer', timeout: 15000 });
    await sleep(500); // the POST's answer and the channel's copy must not add a bubble
    const texts = await w.messages.allTextContents();
    assert.equal(texts.length, 3, JSON.stringify(texts));
    assert.equal(texts[1], 'You: How long do I have for returns?');
    assert.match(texts[2], /^Bot: Returns are free within <b>30 days<\/b> of delivery \[1\]\.\s*\[1\] returns\.txt$/);
    const answer = w.messages.nth(2);
    assert.equal(await answer.locator('b').count(), 0);
    assert.equal(await answer.locator('em').textContent(), 'returns.txt', 'the cited source');
    assert.equal(model.asked.length, 1);
    assert.equal(model.asked[0].model, 'fake-model');
    assert.deepEqual(await t.violations(), [], 'no securitypolicyviolation event');
  });
});
