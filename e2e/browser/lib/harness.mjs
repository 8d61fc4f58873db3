// Shared pieces of the browser tests: free ports, Chromium, the strict-CSP host page and the
// checks that watch it for CSP violations.

import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { chromium } from 'playwright-core';

/** The widget as it is in the repository. */
export const WIDGET_FILE = new URL('../../../web/widget/confide.js', import.meta.url);

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(fn, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await sleep(interval);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

export function sriOf(source) {
  return 'sha384-' + createHash('sha384').update(source).digest('base64');
}

/**
 * A customer's page on its own loopback origin with a strict CSP (no 'unsafe-inline', Trusted
 * Types required, so an innerHTML string would be refused too). It embeds the widget with one tag
 * and collects CSP reports posted to /csp-report.
 * Options for the customer's own parts: `connect` (more origins the page may connect to),
 * `hostScript` (the page's own script, served as /host.js and included after the widget's tag),
 * `routes` ({path: (req, res) => ...}, the customer's backend on the page's origin) and `images`
 * (more origins the page takes pictures from, such as the server's for the bot's avatar).
 */
export async function startHostPage({
  host = '127.0.0.1', hostname, server, widgetUrl, bot, integrity, connect = [], hostScript, routes = {},
  images = [],
}) {
  const port = await freePort();
  const origin = `http://${hostname || host}:${port}`;
  const serverUrl = new URL(server);
  const wsOrigin = `${serverUrl.protocol === 'https:' ? 'wss' : 'ws'}://${serverUrl.host}`;
  const scriptUrl = new URL(widgetUrl ?? '/widget/v1/confide.js', serverUrl);
  const csp = [
    "default-src 'none'",
    `script-src ${scriptUrl.origin}${hostScript ? " 'self'" : ''}`,
    `connect-src ${serverUrl.origin} ${wsOrigin}${connect.map((o) => ` ${o}`).join('')}${Object.keys(routes).length ? " 'self'" : ''}`,
    "style-src 'self'",
    `img-src 'self'${images.map((o) => ` ${o}`).join('')}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
    'report-uri /csp-report',
  ].join('; ');
  const reports = [];
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Acme shop</title>
<link rel="stylesheet" href="/site.css">
</head>
<body>
<h1>Acme shop</h1>
<p><a href="/about">About us</a></p>
<script src="${scriptUrl.href}" data-bot="${bot}" data-title="Acme support" integrity="${integrity}" crossorigin="anonymous"></script>
${hostScript ? '<script src="/host.js"></script>\n' : ''}</body>
</html>
`;
  const srv = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/csp-report') {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        try {
          reports.push(JSON.parse(body));
        } catch {
          reports.push({ raw: body });
        }
        res.writeHead(204).end();
      });
      return;
    }
    if (req.url === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    const path = req.url.split('?')[0];
    if (routes[path]) {
      routes[path](req, res);
      return;
    }
    if (hostScript && req.url === '/host.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(hostScript);
      return;
    }
    if (req.url === '/site.css') {
      res.writeHead(200, { 'content-type': 'text/css' }).end('body{font-family:serif;margin:2rem}');
      return;
    }
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': csp });
      res.end(html);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  });
  await new Promise((resolve) => srv.listen(port, host, resolve));
  return {
    url: `${origin}/`,
    origin,
    csp,
    reports,
    close: () => new Promise((resolve) => {
      srv.closeAllConnections?.();
      srv.close(() => resolve());
    }),
  };
}

/**
 * Opens a page and records everything that would betray a CSP problem: securitypolicyviolation
 * events (listener installed before any page script through the DevTools protocol, which the
 * page's CSP does not govern), console errors and uncaught exceptions.
 */
export async function openWatched(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  const sockets = [];
  const requests = [];
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push({
        directive: e.effectiveDirective || e.violatedDirective,
        blocked: e.blockedURI,
        sample: e.sample,
      });
    });
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console ${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('request', (req) => requests.push(`${req.method()} ${req.url()}`));
  await page.goto(url);
  return {
    context,
    page,
    problems,
    sockets,
    requests,
    violations: () => page.evaluate(() => window.__cspViolations),
  };
}

/** The widget's parts, found through its (open) shadow root. */
export function widget(page) {
  const root = page.locator('confide-chat');
  return {
    root,
    launcher: root.locator('button.launcher'),
    panel: root.locator('section.panel'),
    status: root.locator('.status'),
    log: root.locator('[role="log"]'),
    messages: root.locator('.msg'),
    error: root.locator('.error'),
    input: root.getByLabel('Message'),
    send: root.locator('button.send'),
    close: root.locator('button.close'),
  };
}

/** Tabs from the top of the page until the widget's launcher has the focus. */
export async function tabToLauncher(page, maxTabs = 10) {
  for (let i = 0; i < maxTabs; i += 1) {
    await page.keyboard.press('Tab');
    const onLauncher = await page.evaluate(() => {
      const hostEl = document.activeElement;
      return hostEl?.localName === 'confide-chat' && hostEl.shadowRoot?.activeElement?.classList.contains('launcher');
    });
    if (onLauncher) return;
  }
  throw new Error('the launcher never received the keyboard focus');
}

/** Which element inside the widget has the focus (its class name). */
export function focusedInWidget(page) {
  return page.evaluate(() => {
    const hostEl = document.activeElement;
    if (hostEl?.localName !== 'confide-chat') return null;
    return hostEl.shadowRoot?.activeElement?.className ?? null;
  });
}
