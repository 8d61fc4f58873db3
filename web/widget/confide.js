/*! Confide chat widget v1. Plain JavaScript, no dependencies, no build step.
 *
 * Embed with one tag:
 *   <script src="https://HOST/widget/v1/confide.js" data-bot="BOT_KEY"
 *           integrity="sha384-..." crossorigin="anonymous"></script>
 * Optional: data-title="Support" (the panel's heading).
 *
 * Works under a Content-Security-Policy without 'unsafe-inline': everything is rendered inside a
 * Shadow DOM styled by a constructed stylesheet (adoptedStyleSheets), falling back to CSSOM
 * properties (element.style.setProperty); no inline handlers, no code or HTML from strings.
 * Visitors', agents' and the server's texts are only ever inserted as text. What the bot says
 * (greetings, replies, nudge texts) arrives in the formatting subset the server sanitized it to on
 * save (b strong i em code br p ul ol li, and a with an http/https/mailto/tel href); the widget
 * builds exactly those elements itself, node by node, and shows anything else as text.
 *
 * Flow (a minimal Pusher protocol 7 client): POST /chat/v1/{bot}/sessions -> chat token (kept in
 * memory only) and realtime parameters; WebSocket /app/{key}; on pusher:connection_established
 * POST the channel auth endpoint (form socket_id, channel_name, header X-Chat-Token); subscribe;
 * on subscription_succeeded ask for the greeting once; render `message` events (deduplicated by
 * id); send with POST /chat/v1/messages. A generated answer is shown as it is written
 * (`answer-start`, `answer-delta` pieces as text, `answer-end`) and replaced by its stored message. Pings after activity_timeout of silence, treats a missing
 * pong as a dead connection, reconnects with backoff following the Pusher close-code ranges.
 * After a re-subscription it catches up with GET /chat/v1/messages, since the channel does not
 * replay what was published while the socket was down.
 *
 * Language: `window.confideOptions = { language: 'nb' }` (a language tag such as `en` or `nb-NO`,
 * read when the chat starts and with every message) asks the bot to greet and answer in that
 * language when it speaks it; a tag that is not shaped like one is ignored.
 *
 * Signed-in visitors: a host page that knows its user sets, from its own script and in any order,
 *   window.confideOptions = { getAuthToken: (chatId) => Promise<string> }
 * resolving to a JWT its backend signed (aud = the bot key, sub = the user id, exp). When a chat
 * starts the widget posts it to /chat/v1/identity and continues with the identity-bound chat token
 * it gets back; when that fails it continues unverified. The JWT is never stored or shown.
 *
 * Nudges: on load the widget reads the bot's nudge rules (GET /chat/v1/{bot}/nudges; no chat is
 * started) and offers the first for this page path after its seconds on the page, once per browser
 * session, as a teaser above the launcher; nudges an agent sends arrive as `nudge` events. A nudge's
 * form answer starts the chat if needed and goes to /chat/v1/nudges/{id}/submit. "Talk to a
 * person" asks for a human (POST /chat/v1/handover); `handover` events show where that stands.
 *
 * Avatar: when the chat starts, the session's `avatar_url` (null when the bot has none) is shown in
 * the panel's heading and beside the bot's messages, as an <img> the host page's CSP must allow
 * (`img-src` with this server's origin); an image that does not load is removed.
 *
 * Refusals: the error body is {"error":{"code","message","bot_message"?}}. The widget shows
 * `bot_message` when present (a bot's configured text), else the server's message for
 * `outside_active_hours`, else its own text for the code.
 */
(() => {
  'use strict';

  const tag = document.currentScript;
  if (!tag || !tag.src) return;
  const BOT = tag.getAttribute('data-bot') || '';
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(BOT)) {
    console.warn('Confide widget: the script tag needs a valid data-bot attribute');
    return;
  }
  let SERVER;
  try {
    SERVER = new URL(tag.src, location.href).origin;
  } catch (_) {
    return;
  }
  const ONCE = Symbol.for('confide.widget:' + SERVER + '/' + BOT);
  if (window[ONCE]) return;
  window[ONCE] = true;
  const TITLE = (tag.getAttribute('data-title') || 'Chat').slice(0, 80);

  const CLIENT = 'confide-widget';
  const VERSION = '1.0';
  const MAX_CHARS = 2000;
  const CONNECT_TIMEOUT = 15000;
  const MAX_ACTIVITY = 120000;
  const MAX_BACKOFF = 30000;
  const AUTH_TOKEN_TIMEOUT = 10000;
  const MAX_AUTH_TOKEN = 8192;

  const TEXT = {
    origin_not_allowed: 'Chat is not available on this website.',
    ip_not_allowed: 'Chat is not available from your network.',
    outside_active_hours: 'We are closed right now. Please come back during our opening hours.',
    rate_limited: 'Too many requests. Please wait a moment and try again.',
    not_found: 'This chat is not available.',
    unknown_bot: 'This chat is not available.',
    invalid_message: 'A message is 1 to 2000 characters.',
    invalid_chat_token: 'Your chat session has expired.',
    identity_required: 'Please sign in to chat with us.',
    network: 'Cannot reach the chat service. Retrying\u2026',
    realtime: 'The chat service refused the live connection. Replies still arrive after you send.',
    generic: 'Something went wrong. Please try again.',
  };
  const STATES = {
    idle: '',
    connecting: 'Connecting\u2026',
    connected: 'Connected',
    reconnecting: 'Reconnecting\u2026',
    offline: 'Offline',
  };

  // ---------------------------------------------------------------- styles
  const BLUE = '#3547d4';
  const RULES = [
    [':host', 'all:initial;position:fixed;right:20px;bottom:20px;z-index:2147483000;display:block;' +
      'font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2330'],
    ['*', 'box-sizing:border-box'],
    ['[hidden]', 'display:none!important'],
    ['.launcher', 'display:flex;align-items:center;justify-content:center;width:56px;height:56px;' +
      'margin:0 0 0 auto;padding:0;border:0;border-radius:50%;background:' + BLUE + ';color:#fff;' +
      'cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.28)'],
    ['.launcher svg', 'width:26px;height:26px;fill:currentColor'],
    ['.panel', 'position:absolute;right:0;bottom:72px;display:flex;flex-direction:column;width:360px;' +
      'max-width:calc(100vw - 40px);height:520px;max-height:calc(100vh - 112px);overflow:hidden;' +
      'background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.28)'],
    ['.head', 'display:flex;align-items:center;gap:8px;padding:12px 14px;background:' + BLUE + ';color:#fff'],
    ['.avatar', 'flex:none;width:32px;height:32px;border-radius:50%;background:#fff;object-fit:cover'],
    ['.msg-avatar', 'float:left;width:20px;height:20px;margin:0 6px 0 0;border-radius:50%;object-fit:cover'],
    ['.titles', 'flex:1;min-width:0'],
    ['.title', 'margin:0;font-size:15px;font-weight:600;line-height:1.3'],
    ['.status', 'display:flex;align-items:center;gap:6px;margin:2px 0 0;font-size:12px'],
    ['.dot', 'flex:none;width:8px;height:8px;border-radius:50%;background:#c3c7d4'],
    ['.status[data-state=connected] .dot', 'background:#3ddc84'],
    ['.status[data-state=connecting] .dot,.status[data-state=reconnecting] .dot', 'background:#f5c542'],
    ['.status[data-state=offline] .dot', 'background:#ff7a7a'],
    ['.close', 'flex:none;width:32px;height:32px;padding:0;border:0;border-radius:6px;background:transparent;' +
      'color:inherit;font:20px/1 system-ui,sans-serif;cursor:pointer'],
    ['.log', 'flex:1;display:flex;flex-direction:column;gap:8px;padding:12px;overflow-y:auto;background:#f6f7fb'],
    ['.msg', 'align-self:flex-start;max-width:85%;padding:8px 11px;border:1px solid #e1e4ee;border-radius:12px;' +
      'background:#fff;color:#1f2330;white-space:pre-wrap;overflow-wrap:anywhere;opacity:1'],
    ['.msg.visitor', 'align-self:flex-end;background:' + BLUE + ';border-color:' + BLUE + ';color:#fff'],
    ['.msg.pending', 'opacity:.65'],
    ['.msg.streaming', 'border-style:dashed'],
    ['.msg.failed', 'background:#fff0f0;border-color:#d33;color:#1f2330'],
    ['.sr', 'position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;' +
      'clip:rect(0 0 0 0);white-space:nowrap;border:0'],
    ['.error', 'margin:0;padding:8px 14px;border-top:1px solid #f3c4c4;background:#fff0f0;color:#a11;font-size:13px'],
    ['.form', 'display:flex;gap:8px;margin:0;padding:10px;border-top:1px solid #e1e4ee;background:#fff'],
    ['.input', 'flex:1;min-width:0;padding:9px 11px;border:1px solid #b9bfd0;border-radius:8px;' +
      'background:#fff;color:#1f2330;font:inherit'],
    ['.send', 'flex:none;padding:0 14px;border:0;border-radius:8px;background:' + BLUE + ';color:#fff;' +
      'font:inherit;font-weight:600;cursor:pointer'],
    ['.human', 'flex:none;padding:4px 8px;border:1px solid rgba(255,255,255,.6);border-radius:6px;' +
      'background:transparent;color:inherit;font:12px/1.2 system-ui,sans-serif;cursor:pointer'],
    ['.note', 'align-self:center;margin:0;padding:2px 8px;color:#555b6e;font-size:12px;text-align:center'],
    ['.nudge', 'align-self:stretch;margin:0;padding:10px 12px;border:1px solid #c9cff0;border-radius:12px;background:#eef0fd'],
    ['.nudge-title', 'margin:0 0 4px;font-weight:600'],
    ['.nudge-text', 'margin:0;white-space:pre-wrap;overflow-wrap:anywhere'],
    ['.choices', 'display:flex;flex-wrap:wrap;gap:6px;margin:8px 0 0;white-space:normal'],
    ['.choice', 'display:inline-block;padding:5px 10px;border:1px solid ' + BLUE + ';border-radius:14px;' +
      'background:#fff;color:' + BLUE + ';font:inherit;font-size:13px;text-decoration:none;cursor:pointer'],
    ['.rich p', 'margin:0 0 6px'],
    ['.rich ul,.rich ol', 'margin:4px 0;padding:0 0 0 20px'],
    ['.rich a', 'color:inherit;text-decoration:underline'],
    ['.rich code', 'font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px'],
    ['.nudge-form', 'display:flex;flex-wrap:wrap;gap:6px;margin:8px 0 0'],
    ['.nudge-label', 'flex-basis:100%;font-size:12px'],
    ['.nudge-status', 'margin:6px 0 0;font-size:12px'],
    ['.teaser', 'display:block;max-width:260px;margin:0 0 10px auto;padding:10px 12px;border:0;border-radius:12px;' +
      'background:#fff;color:#1f2330;font:inherit;text-align:left;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.22)'],
  ];
  const EXTRA_CSS =
    '.launcher:focus-visible,.close:focus-visible,.send:focus-visible,.input:focus-visible,.log:focus-visible' +
    '{outline:3px solid #f5a623;outline-offset:2px}' +
    '.launcher:hover,.send:hover{filter:brightness(1.12)}.close:hover{background:rgba(255,255,255,.18)}' +
    '.send:disabled,.input:disabled,.choice:disabled{opacity:.5;cursor:not-allowed;filter:none}' +
    '@media (prefers-reduced-motion:no-preference){.panel{animation:cf-in .16s ease-out}}' +
    '@keyframes cf-in{from{opacity:0;transform:translateY(8px)}to{opacity:1;transform:none}}' +
    '@media (forced-colors:active){.launcher,.send,.msg{border:1px solid CanvasText}}';

  // ---------------------------------------------------------------- DOM
  const host = document.createElement('confide-chat');
  const shadow = host.attachShadow({ mode: 'open' });
  let adopted = false;
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(RULES.map(([s, d]) => s + '{' + d + '}').join('') + EXTRA_CSS);
    shadow.adoptedStyleSheets = [sheet];
    adopted = true;
  } catch (_) {
    adopted = false; // no constructable stylesheets: CSSOM properties below
  }

  const decls = (text) => text.split(';').filter(Boolean).map((d) => {
    const i = d.indexOf(':');
    let value = d.slice(i + 1).trim();
    const important = /!important$/.test(value);
    if (important) value = value.replace(/\s*!important$/, '');
    return [d.slice(0, i).trim(), value, important ? 'important' : ''];
  });
  const setProps = (el, text) => {
    for (const [p, v, imp] of decls(text)) el.style.setProperty(p, v, imp);
  };
  // Fallback painting: apply each simple rule to the elements it matches, in order.
  const paint = (root) => {
    if (adopted) return;
    const els = [root, ...root.querySelectorAll('*')];
    for (const [sel, text] of RULES) {
      if (sel === ':host' || sel === '[hidden]' || /:/.test(sel)) continue;
      for (const el of els) if (el.matches(sel)) setProps(el, text);
    }
    for (const el of els) if (el.hidden) el.style.setProperty('display', 'none', 'important');
  };
  const show = (el, visible) => {
    el.hidden = !visible;
    if (!adopted) {
      el.style.removeProperty('display');
      paint(el);
    }
  };
  if (!adopted) setProps(host, RULES[0][1]);

  const h = (name, cls, attrs, text) => {
    const el = document.createElement(name);
    if (cls) el.className = cls;
    if (attrs) for (const k of Object.keys(attrs)) el.setAttribute(k, attrs[k]);
    if (text != null) el.textContent = text;
    return el;
  };
  const svgIcon = () => {
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    const path = document.createElementNS(NS, 'path');
    path.setAttribute('d', 'M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z');
    svg.append(path);
    return svg;
  };

  const panel = h('section', 'panel', { id: 'cf-panel', role: 'dialog', 'aria-labelledby': 'cf-title' });
  panel.hidden = true;
  const head = h('header', 'head');
  // The bot's picture, once the chat has started and says where it is.
  const headAvatar = h('img', 'avatar', {
    alt: '', width: '32', height: '32', decoding: 'async', referrerpolicy: 'no-referrer',
  });
  headAvatar.hidden = true;
  const titles = h('div', 'titles');
  const title = h('h2', 'title', { id: 'cf-title' }, TITLE);
  const status = h('p', 'status', { role: 'status', 'data-state': 'idle' });
  const dot = h('span', 'dot', { 'aria-hidden': 'true' });
  const statusText = h('span', 'status-text', null, '');
  status.append(dot, statusText);
  titles.append(title, status);
  const closeBtn = h('button', 'close', { type: 'button', 'aria-label': 'Close chat' }, '\u00d7');
  // Shown once the chat is live, until a person has been asked for.
  const humanBtn = h('button', 'human', { type: 'button' }, 'Talk to a person');
  humanBtn.hidden = true;
  head.append(headAvatar, titles, humanBtn, closeBtn);
  const log = h('div', 'log', {
    role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': 'Conversation', tabindex: '0',
  });
  const errorLine = h('p', 'error', { role: 'alert' });
  errorLine.hidden = true;
  const form = h('form', 'form', { novalidate: '' });
  const label = h('label', 'sr', { for: 'cf-input' }, 'Message');
  const input = h('input', 'input', {
    id: 'cf-input', type: 'text', autocomplete: 'off', maxlength: String(MAX_CHARS),
    placeholder: 'Type a message\u2026', enterkeyhint: 'send',
  });
  const sendBtn = h('button', 'send', { type: 'submit' }, 'Send');
  sendBtn.disabled = true;
  form.append(label, input, sendBtn);
  panel.append(head, log, errorLine, form);
  const launcher = h('button', 'launcher', {
    type: 'button', 'aria-controls': 'cf-panel', 'aria-expanded': 'false', 'aria-label': 'Open chat',
  });
  launcher.append(svgIcon());
  // A nudge the page's rules offer while the panel is closed: its title, above the launcher.
  const teaser = h('button', 'teaser', { type: 'button' });
  teaser.hidden = true;
  shadow.append(panel, teaser, launcher);

  const mount = () => {
    document.body.append(host);
    paint(panel);
    paint(teaser);
    paint(launcher);
  };
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount, { once: true });

  // ---------------------------------------------------------------- view helpers
  let state = 'idle';
  const setState = (s) => {
    state = s;
    status.setAttribute('data-state', s);
    statusText.textContent = STATES[s];
    paint(status);
  };
  const showError = (text) => {
    errorLine.textContent = text || '';
    show(errorLine, !!text);
  };
  const errorText = (r) => {
    const e = r.err || {};
    if (typeof e.bot_message === 'string' && e.bot_message) return e.bot_message;
    if (r.code === 'outside_active_hours' && typeof e.message === 'string' && e.message) return e.message;
    if (TEXT[r.code]) return TEXT[r.code];
    return TEXT.generic;
  };
  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const scrollDown = () => {
    log.scrollTop = log.scrollHeight;
  };
  // The bot's formatting subset, built as elements; a tag outside it, or not in the exact shape
  // the server's sanitizer writes, stays text. Links open in a new tab without an opener.
  const RICH = ['a', 'b', 'br', 'code', 'em', 'i', 'li', 'ol', 'p', 'strong', 'ul'];
  const NAMED = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
  const unescape = (s) => s.replace(/&(#[0-9]{1,7}|#x[0-9a-fA-F]{1,6}|[a-z]{2,4});/g, (all, ref) => {
    if (ref[0] !== '#') return Object.prototype.hasOwnProperty.call(NAMED, ref) ? NAMED[ref] : all;
    const n = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    return n > 0 && n <= 0x10ffff && (n < 0xd800 || n > 0xdfff) ? String.fromCodePoint(n) : all;
  });
  const linkTarget = (raw) => {
    try {
      const url = new URL(raw);
      return ['http:', 'https:', 'mailto:', 'tel:'].includes(url.protocol) ? url.href : null;
    } catch (_) {
      return null;
    }
  };
  const TOKEN = /<(\/?)([a-z]+)((?: [a-z]+="[^"<>]*")*)>|[^<]+|</g;
  const formatted = (parent, text) => {
    parent.classList.add('rich');
    const open = [parent];
    TOKEN.lastIndex = 0;
    for (let m = TOKEN.exec(text); m; m = TOKEN.exec(text)) {
      const [all, closing, name, attrs] = m;
      const top = open[open.length - 1];
      if (!name || !RICH.includes(name)) {
        top.append(document.createTextNode(unescape(all)));
      } else if (closing) {
        const at = open.map((el) => el.localName).lastIndexOf(name);
        if (at > 0) open.length = at;
      } else {
        const el = document.createElement(name);
        const href = name === 'a' && / href="([^"]*)"/.exec(attrs);
        const target = href && linkTarget(unescape(href[1]));
        if (target) {
          el.setAttribute('href', target);
          el.setAttribute('target', '_blank');
          el.setAttribute('rel', 'noopener noreferrer nofollow');
        }
        top.append(el);
        if (name !== 'br') open.push(el);
      }
    }
    return parent;
  };
  // ---------------------------------------------------------------- avatar
  let avatarUrl = null; // an http(s) URL of this server's avatar route, or null
  const avatarImage = (cls, size) => h('img', cls, {
    src: avatarUrl, alt: '', width: size, height: size, decoding: 'async', referrerpolicy: 'no-referrer',
  });
  const setAvatar = (raw) => {
    let url = null;
    try {
      const parsed = typeof raw === 'string' && raw.length <= 2048 ? new URL(raw) : null;
      if (parsed && /^https?:$/.test(parsed.protocol) && parsed.pathname.startsWith('/widget/v1/bots/')) {
        url = parsed.href;
      }
    } catch (_) {
      url = null;
    }
    if (url === avatarUrl) return;
    avatarUrl = url;
    if (url) headAvatar.setAttribute('src', url);
    else headAvatar.removeAttribute('src');
    show(headAvatar, !!url);
    for (const img of log.querySelectorAll('.msg-avatar')) {
      if (url) img.setAttribute('src', url);
      else img.remove();
    }
  };
  // Blocked by the page's CSP, or gone: show none rather than a broken image.
  headAvatar.addEventListener('error', () => {
    if (headAvatar.getAttribute('src')) setAvatar(null);
  });

  const WHO = { visitor: 'You: ', bot: 'Bot: ', agent: 'Agent: ' };
  const bubble = (sender, text) => {
    const el = h('div', 'msg ' + sender);
    if (sender === 'bot' && avatarUrl) el.append(avatarImage('msg-avatar', '20'));
    el.append(h('span', 'sr', null, WHO[sender]));
    if (sender === 'bot') formatted(el, text);
    else el.append(document.createTextNode(text));
    return el;
  };
  // Unconfirmed visitor messages stay last: what the server has confirmed goes before them.
  const append = (el, last) => {
    const stick = nearBottom();
    log.insertBefore(el, last || !pending.length ? null : pending[0].el);
    paint(el);
    if (stick || el.classList.contains('visitor')) scrollDown();
  };

  // ---------------------------------------------------------------- messages
  const seen = new Set();
  const pending = []; // visitor messages shown before the server confirmed them: {el, text}
  let held = null; // messages that arrived during a catch-up, shown after the history
  // A generated answer as it is written (`answer-start`, `answer-delta`), until the stored
  // message with its id replaces it. The pieces are plain text and are shown as text.
  const streams = new Map();
  const MAX_STREAMS = 8;
  const streaming = (event, data) => {
    if (!data || typeof data !== 'object' || typeof data.message_id !== 'string') return;
    const id = data.message_id;
    if (seen.has(id) || held) return;
    if (event === 'answer-start' && !streams.has(id) && streams.size < MAX_STREAMS) {
      const el = bubble('bot', '');
      el.classList.add('streaming');
      el.setAttribute('aria-busy', 'true');
      streams.set(id, el);
      append(el);
    } else if (event === 'answer-delta' && typeof data.text === 'string') {
      const el = streams.get(id);
      if (!el) return;
      const stick = nearBottom();
      el.append(document.createTextNode(data.text));
      if (stick) scrollDown();
    } else if (event === 'answer-end') {
      const el = streams.get(id);
      if (el) el.removeAttribute('aria-busy');
    }
  };
  const render = (m) => {
    if (!m || typeof m !== 'object' || typeof m.id !== 'string' || typeof m.text !== 'string') return;
    if (held) {
      held.push(m);
      return;
    }
    if (seen.has(m.id)) return;
    seen.add(m.id);
    const sender = m.sender === 'visitor' || m.sender === 'agent' ? m.sender : 'bot';
    let el = null;
    if (sender === 'visitor' && pending.length) {
      // Only this page sends the visitor's messages for this chat, in order: the confirmation
      // belongs to the same text, else to the oldest one waiting (the server may normalise text).
      const i = Math.max(0, pending.findIndex((p) => p.text === m.text));
      el = pending.splice(i, 1)[0].el;
      if (i > 0) log.insertBefore(el, pending[0].el);
      el.lastChild.textContent = m.text;
      el.classList.remove('pending');
      paint(el);
    }
    const streamed = streams.get(m.id);
    streams.delete(m.id);
    if (!el) {
      el = bubble(sender, m.text);
      const offered = sender === 'bot' && choices(m);
      if (offered) el.append(offered);
      if (streamed && streamed.isConnected) {
        // The stored answer replaces what was streamed of it, in its place.
        streamed.replaceWith(el);
        paint(el);
      } else {
        append(el);
      }
    }
    if (typeof m.created_at === 'string') {
      const t = new Date(m.created_at);
      if (!isNaN(t)) el.setAttribute('title', t.toLocaleString());
    }
  };

  // ---------------------------------------------------------------- HTTP
  // POST with a JSON body, POST with a form (a URLSearchParams), or GET (method 'GET').
  const api = async (url, token, body, method) => {
    const headers = {};
    let payload;
    if (method === 'GET') {
      payload = undefined;
    } else if (body instanceof URLSearchParams) {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      payload = body.toString();
    } else {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body || {});
    }
    if (token) headers['X-Chat-Token'] = token;
    let res;
    try {
      res = await fetch(url, {
        method: method || 'POST', headers, body: payload, mode: 'cors', credentials: 'omit', cache: 'no-store',
        // A catch-up holds back live messages until it answers: it must not hang.
        signal: method === 'GET' && AbortSignal.timeout ? AbortSignal.timeout(CONNECT_TIMEOUT) : undefined,
      });
    } catch (_) {
      return { ok: false, status: 0, code: 'network', err: {}, data: null, retryAfter: 0 };
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    const err = (data && typeof data.error === 'object' && data.error) || {};
    return {
      ok: res.ok,
      status: res.status,
      data,
      err,
      code: res.ok ? '' : String(err.code || 'http_' + res.status),
      retryAfter: Number(res.headers.get('Retry-After')) || 0,
    };
  };
  const transient = (r) => r.status === 0 || r.status === 429 || r.status >= 500;

  // ---------------------------------------------------------------- visitor id
  const VKEY = 'confide.visitor.' + BOT;
  const loadVisitor = () => {
    try {
      const v = window.localStorage.getItem(VKEY);
      return v && /^[A-Za-z0-9_-]{1,64}$/.test(v) ? v : null;
    } catch (_) {
      return null;
    }
  };
  const saveVisitor = (v) => {
    try {
      if (v) window.localStorage.setItem(VKEY, v);
      else window.localStorage.removeItem(VKEY);
    } catch (_) {
      /* storage unavailable: the server makes a new id each time */
    }
  };

  // ---------------------------------------------------------------- language
  // The host page's `confideOptions.language`, when it is a language tag the server accepts.
  const language = () => {
    try {
      const opts = window.confideOptions;
      const tag = opts && opts.language;
      return typeof tag === 'string' && /^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8}){0,4}$/.test(tag) ? tag : null;
    } catch (_) {
      return null;
    }
  };
  // A request body with the language added when there is one.
  const withLanguage = (body) => {
    const tag = language();
    return tag ? Object.assign(body, { language_code: tag }) : body;
  };
  // The page's facts about its visitor (window.confideOptions.context): strings, numbers and
  // booleans under context keys, copied when the chat starts. The server keeps them apart from
  // the bot's own memory as untrusted.
  let contextRefused = false;
  const pageContext = () => {
    try {
      const c = window.confideOptions && window.confideOptions.context;
      if (contextRefused || !c || typeof c !== 'object' || Array.isArray(c)) return null;
      const out = {};
      for (const k of Object.keys(c).slice(0, 100)) {
        const v = c[k];
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
      }
      return out;
    } catch (_) {
      return null;
    }
  };

  // ---------------------------------------------------------------- chat session
  let session = null; // {chat_id, channel, token, ws: url, auth: url}; the token lives only here
  let starting = null;
  let refused = false;
  let greeted = false;
  let sessionAttempts = 0;
  let sessionTimer = 0;

  const realtimeUrl = (rt) => {
    const hostName = String(rt.host);
    const port = Number(rt.port);
    if (!/^[A-Za-z0-9.:[\]-]+$/.test(hostName) || !(port > 0 && port < 65536)) return null;
    const authority = (hostName.includes(':') && hostName[0] !== '[' ? '[' + hostName + ']' : hostName) + ':' + port;
    return (rt.tls ? 'wss://' : 'ws://') + authority + '/app/' + encodeURIComponent(String(rt.app_key)) +
      '?protocol=7&client=' + CLIENT + '&version=' + VERSION;
  };

  const startSession = (renewal) => {
    if (starting) return starting;
    starting = (async () => {
      clearTimeout(sessionTimer);
      setState(renewal ? 'reconnecting' : 'connecting');
      const visitor = loadVisitor();
      const body = withLanguage(visitor ? { visitor_id: visitor } : {});
      const context = pageContext();
      if (context) body.context = context;
      const r = await api(SERVER + '/chat/v1/' + encodeURIComponent(BOT) + '/sessions', null, body);
      if (!r.ok) {
        if (r.code === 'invalid_context' && context) {
          // The chat matters more than the page's facts: start it without them.
          console.warn('Confide widget: confideOptions.context was refused:', r.err && r.err.message);
          contextRefused = true;
          starting = null;
          return startSession(renewal);
        }
        if (r.code === 'invalid_visitor_id' && visitor) {
          saveVisitor(null);
          starting = null;
          return startSession(renewal);
        }
        showError(errorText(r));
        setState('offline');
        if (transient(r)) {
          const wait = r.retryAfter ? r.retryAfter * 1000 : backoff(sessionAttempts++);
          sessionTimer = setTimeout(() => startSession(renewal), Math.max(1000, wait));
        } else {
          refused = true;
          input.disabled = true;
        }
        sendBtn.disabled = true;
        return;
      }
      const d = r.data || {};
      const rt = d.realtime || {};
      const wsUrl = realtimeUrl(rt);
      let authUrl = null;
      try {
        authUrl = new URL(String(rt.auth_endpoint), SERVER);
        if (!/^https?:$/.test(authUrl.protocol)) authUrl = null;
      } catch (_) {
        authUrl = null;
      }
      if (typeof d.token !== 'string' || typeof d.channel !== 'string' || !wsUrl || !authUrl) {
        showError(TEXT.generic);
        setState('offline');
        return;
      }
      sessionAttempts = 0;
      const token = await verifyIdentity(String(d.chat_id), d.token);
      session = { chat_id: d.chat_id, channel: d.channel, token, ws: wsUrl, auth: authUrl.href };
      if (typeof d.visitor_id === 'string') saveVisitor(d.visitor_id);
      setAvatar(d.avatar_url);
      if (renewal) greeted = true; // a renewed chat does not greet again
      sendBtn.disabled = false;
      showError('');
      connect();
    })().finally(() => {
      starting = null;
    });
    return starting;
  };

  // The host page says who its signed-in visitor is; the answer is the chat token to use from now
  // on (bound to that identity), or the unverified one when there is no identity or it is refused.
  const verifyIdentity = async (chatId, token) => {
    let jwt = null;
    let timer = 0;
    try {
      const opts = window.confideOptions;
      if (!opts || typeof opts.getAuthToken !== 'function') return token;
      jwt = await Promise.race([
        opts.getAuthToken(chatId),
        new Promise((resolve) => {
          timer = setTimeout(resolve, AUTH_TOKEN_TIMEOUT, null);
        }),
      ]);
    } catch (_) {
      jwt = null; // the host page could not tell: continue unverified
    } finally {
      clearTimeout(timer);
    }
    if (typeof jwt !== 'string' || !jwt || jwt.length > MAX_AUTH_TOKEN) return token;
    const r = await api(SERVER + '/chat/v1/identity', token, { token: jwt });
    if (r.ok && r.data && typeof r.data.token === 'string' && r.data.token) return r.data.token;
    // The code only: the token itself stays out of logs.
    console.warn('Confide widget: the visitor is not verified (' + String(r.code).slice(0, 64) + ')');
    return token;
  };

  // A refusal the visitor cannot get past by retrying (e.g. the bot serves signed-in visitors only).
  const refuseChat = (r) => {
    closeSocket();
    halted = true;
    refused = true;
    input.disabled = true;
    sendBtn.disabled = true;
    setState('offline');
    showError(errorText(r));
  };

  const renew = async () => {
    closeSocket();
    session = null;
    sendBtn.disabled = true;
    await startSession(true);
  };

  // ---------------------------------------------------------------- realtime (Pusher protocol 7)
  let ws = null;
  let socketId = null;
  let subscribed = false;
  let halted = false;
  let lastError = null; // the data of the last pusher:error
  let attempts = 0;
  let activityMs = MAX_ACTIVITY;
  let pongMs = 30000;
  let retryTimer = 0;
  let connectTimer = 0;
  let activityTimer = 0;
  let pongTimer = 0;

  const backoff = (n) => Math.min(MAX_BACKOFF, 1000 * 2 ** Math.min(n, 6)) * (0.5 + Math.random() / 2);
  const frame = (sock, event, data) => {
    try {
      if (sock.readyState === 1) sock.send(JSON.stringify({ event, data }));
    } catch (_) {
      /* the close handler deals with it */
    }
  };
  const clearTimers = () => {
    clearTimeout(retryTimer);
    clearTimeout(connectTimer);
    clearTimeout(activityTimer);
    clearTimeout(pongTimer);
    retryTimer = connectTimer = activityTimer = pongTimer = 0;
  };
  const closeSocket = () => {
    const sock = ws;
    ws = null;
    socketId = null;
    subscribed = false;
    clearTimers();
    if (sock) {
      sock.onmessage = sock.onclose = sock.onerror = null;
      try {
        sock.close();
      } catch (_) {
        /* already closed */
      }
    }
  };
  // Any frame from the server proves the connection alive; after activity_timeout of silence we
  // ping, and a connection that stays silent for the pong timeout is dead.
  const resetActivity = () => {
    clearTimeout(activityTimer);
    clearTimeout(pongTimer);
    pongTimer = 0;
    const sock = ws;
    if (!sock || !socketId) return;
    activityTimer = setTimeout(() => {
      frame(sock, 'pusher:ping', {});
      pongTimer = setTimeout(() => {
        if (ws === sock) reconnect('now');
      }, pongMs);
    }, activityMs);
  };

  const reconnect = (kind) => {
    closeSocket();
    if (halted || !session) return;
    setState(navigator.onLine === false ? 'offline' : 'reconnecting');
    let delay = backoff(attempts);
    if (kind === 'now' && attempts === 0) delay = 0;
    if (kind === 'slow') delay = Math.max(1000, delay);
    attempts += 1;
    retryTimer = setTimeout(connect, delay);
  };

  const halt = (text) => {
    closeSocket();
    halted = true;
    setState('offline');
    showError(text);
    greet(); // replies still come in the HTTP answers
  };

  const connect = () => {
    closeSocket();
    if (!session || halted) return;
    if (state !== 'reconnecting' && state !== 'offline') setState('connecting');
    let sock;
    try {
      sock = new WebSocket(session.ws);
    } catch (_) {
      halt(TEXT.realtime); // refused by the page's CSP or a malformed URL: retrying cannot help
      return;
    }
    ws = sock;
    lastError = null;
    connectTimer = setTimeout(() => {
      if (ws === sock) reconnect('normal');
    }, CONNECT_TIMEOUT);
    sock.onmessage = (ev) => {
      if (ws === sock) onFrame(sock, ev.data);
    };
    sock.onclose = (ev) => {
      if (ws === sock) onClose(ev.code);
    };
  };

  const onClose = (code) => {
    if ((code === 1005 || code === 1006 || !code) && lastError && Number(lastError.code) >= 4000) {
      code = Number(lastError.code);
    }
    if ((code >= 4000 && code < 4100) || (code >= 4300 && code < 4400)) {
      halt(TEXT.realtime);
    } else if (code >= 4200 && code < 4300) {
      reconnect('now');
    } else if (code >= 4100 && code < 4200) {
      reconnect('slow');
    } else {
      reconnect('normal');
    }
  };

  const parse = (data) => {
    if (typeof data !== 'string') return data;
    try {
      return JSON.parse(data);
    } catch (_) {
      return data;
    }
  };

  const onFrame = (sock, raw) => {
    if (typeof raw !== 'string') return;
    let f;
    try {
      f = JSON.parse(raw);
    } catch (_) {
      return;
    }
    if (!f || typeof f.event !== 'string') return;
    resetActivity();
    const data = parse(f.data);
    const mine = session && f.channel === session.channel;
    switch (f.event) {
      case 'pusher:connection_established': {
        if (socketId) return;
        clearTimeout(connectTimer);
        if (!data || typeof data.socket_id !== 'string' || !/^\d+\.\d+$/.test(data.socket_id)) {
          reconnect('normal');
          return;
        }
        socketId = data.socket_id;
        const seconds = Number(data.activity_timeout);
        activityMs = Math.min(MAX_ACTIVITY, seconds > 0 ? seconds * 1000 : MAX_ACTIVITY);
        pongMs = Math.min(30000, Math.max(1000, activityMs / 4));
        resetActivity();
        authorize(sock);
        break;
      }
      case 'pusher:ping':
        frame(sock, 'pusher:pong', {});
        break;
      case 'pusher:pong':
        // The answer to the ping sent when the browser came back online: the socket survived.
        if (subscribed && state === 'offline' && navigator.onLine !== false) setState('connected');
        break;
      case 'pusher:error':
        lastError = data && typeof data === 'object' ? data : null;
        break;
      case 'pusher_internal:subscription_succeeded':
        if (mine) onSubscribed();
        break;
      case 'pusher:subscription_error':
        if (mine) reconnect('slow');
        break;
      case 'message':
        if (mine) render(data);
        break;
      case 'answer-start':
      case 'answer-delta':
      case 'answer-end':
        if (mine) streaming(f.event, data);
        break;
      case 'handover':
        if (mine && data && typeof data.state === 'string') onHandover(data.state);
        break;
      case 'nudge':
        if (mine) showNudge(data);
        break;
      default:
    }
  };

  const authorize = async (sock) => {
    const s = session;
    const r = await api(s.auth, s.token, new URLSearchParams({ socket_id: socketId, channel_name: s.channel }));
    if (ws !== sock || session !== s) return;
    if (r.ok && r.data && typeof r.data.auth === 'string') {
      frame(sock, 'pusher:subscribe', { channel: s.channel, auth: r.data.auth });
    } else if (r.code === 'invalid_chat_token') {
      renew();
    } else if (r.code === 'identity_required') {
      refuseChat(r);
    } else if (transient(r)) {
      reconnect('slow');
    } else {
      halt(errorText(r));
    }
  };

  const onSubscribed = () => {
    subscribed = true;
    attempts = 0;
    setState('connected');
    if (handover !== 'requested' && handover !== 'agent') show(humanBtn, true);
    if (!refused && errorLine.textContent === TEXT.network) showError('');
    if (session.resubscribed) catchUp(0);
    session.resubscribed = true;
    greet();
  };

  // What was published while the socket was down. Messages arriving meanwhile are held, so the
  // history goes first and nothing shows twice (render skips ids already shown).
  let catchUpAgain = false;
  let catchUpTimer = 0;
  const catchUp = async (tries) => {
    clearTimeout(catchUpTimer);
    if (held) {
      catchUpAgain = true;
      return;
    }
    const s = session;
    held = [];
    const r = await api(SERVER + '/chat/v1/messages', s.token, null, 'GET');
    const arrived = held;
    held = null;
    if (session === s && r.ok && r.data && Array.isArray(r.data.messages)) r.data.messages.forEach(render);
    arrived.forEach(render);
    if (catchUpAgain) {
      catchUpAgain = false;
      catchUp(0);
    } else if (!r.ok && transient(r) && session === s && tries < 5) {
      const wait = r.retryAfter ? r.retryAfter * 1000 : backoff(tries);
      catchUpTimer = setTimeout(() => catchUp(tries + 1), Math.max(1000, wait));
    }
  };

  const greet = async () => {
    if (greeted || !session) return;
    greeted = true;
    const r = await api(SERVER + '/chat/v1/greeting', session.token);
    if (r.ok && r.data) render(r.data.message);
    else if (r.code === 'identity_required') refuseChat(r);
    else if (!r.ok) showError(errorText(r));
  };

  window.addEventListener('online', () => {
    if (!session || halted) return;
    if (subscribed && ws) {
      frame(ws, 'pusher:ping', {});
    } else {
      attempts = 0;
      connect();
    }
  });
  window.addEventListener('offline', () => {
    if (session && !halted) setState('offline');
  });

  // ---------------------------------------------------------------- sending
  const post = async (body, retry) => {
    const s = session;
    if (!s) return { ok: false, status: 0, code: 'network', err: {} };
    const r = await api(SERVER + '/chat/v1/messages', s.token, withLanguage(body));
    if (!r.ok && r.code === 'invalid_chat_token' && !retry) {
      if (session === s) await renew();
      if (session) return post(body, true);
    }
    return r;
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !session) return;
    if ([...text].length > MAX_CHARS) {
      showError(TEXT.invalid_message);
      return;
    }
    input.value = '';
    say(text, null);
  });

  // Shows the visitor's message at once, then sends it (with the pressed button, if any).
  const say = async (text, button) => {
    const el = bubble('visitor', text);
    el.classList.add('pending');
    const entry = { el, text };
    pending.push(entry);
    append(el, true);
    const r = await post(button ? { text, button } : { text }, false);
    if (r.ok && r.data) {
      render(r.data.message);
      render(r.data.reply);
      if (!refused && !halted) showError('');
      return;
    }
    const i = pending.indexOf(entry);
    if (i < 0) return; // it arrived over the channel after all
    pending.splice(i, 1);
    el.classList.remove('pending');
    el.classList.add('failed');
    el.append(h('span', 'sr', null, ' (not sent)'));
    paint(el);
    if (!button && !input.value) input.value = text;
    if (r.code === 'identity_required') refuseChat(r);
    else showError(errorText(r));
  };

  // A bot message's buttons: one leading to a dialogue or asking for a human sends its label as
  // the visitor's answer (once: the group is disabled after a press); one with an http(s) url is
  // a link.
  const choices = (m) => {
    const group = h('div', 'choices');
    (Array.isArray(m.buttons) ? m.buttons : []).forEach((b, index) => {
      if (!b || typeof b.label !== 'string') return;
      const target = typeof b.url === 'string' ? linkTarget(b.url) : null;
      if (target) {
        group.append(h('a', 'choice', { href: target, target: '_blank', rel: 'noopener noreferrer nofollow' }, b.label));
      } else if (typeof b.dialogue_id === 'string' || b.handover === true) {
        const press = h('button', 'choice', { type: 'button' }, b.label);
        press.addEventListener('click', () => {
          if (!session) return;
          for (const other of group.querySelectorAll('button')) other.disabled = true;
          say(b.label, { message_id: m.id, index });
        });
        group.append(press);
      }
    });
    return group.childElementCount ? group : null;
  };

  // ---------------------------------------------------------------- people and nudges
  const HANDOVER = {
    requested: 'Waiting for a person to join\u2026',
    agent: 'A person has joined the chat.',
    ended: 'The person has left the chat; the bot answers again.',
  };
  let handover = 'bot';
  const note = (text) => append(h('p', 'note', null, text), true);
  const onHandover = (state) => {
    if (state === handover || !HANDOVER[state]) return;
    handover = state;
    note(HANDOVER[state]);
    show(humanBtn, state === 'ended' && subscribed);
  };
  humanBtn.addEventListener('click', async () => {
    if (!session) return;
    humanBtn.disabled = true;
    const r = await api(SERVER + '/chat/v1/handover', session.token);
    humanBtn.disabled = false;
    if (r.ok && r.data && typeof r.data.state === 'string') onHandover(r.data.state);
    else if (!r.ok) showError(errorText(r));
  });

  // Nudges: the API sends one to this chat, or the page's rules offer one (shown once per
  // browser session). Their texts are shown as text, like every message.
  const NKEY = 'confide.nudged.' + BOT + '.';
  const shownNudges = new Set();
  let nudgeSeq = 0;
  const submitNudge = async (id, value) => {
    if (!session) await startSession(false);
    if (!session) return { ok: false, status: 0, code: 'network', err: {} };
    return api(SERVER + '/chat/v1/nudges/' + encodeURIComponent(id) + '/submit', session.token, { value });
  };
  const nudgeForm = (n, card) => {
    const f = n.form;
    if (!f || typeof f.label !== 'string' || typeof f.button !== 'string') return;
    const email = f.input === 'email';
    const id = 'cf-nudge-' + ++nudgeSeq;
    const nf = h('form', 'nudge-form', { novalidate: '' });
    const field = h('input', 'input', {
      id, type: email ? 'email' : 'text', maxlength: '500', autocomplete: email ? 'email' : 'off',
    });
    const button = h('button', 'send', { type: 'submit' }, f.button);
    nf.append(h('label', 'nudge-label', { for: id }, f.label), field, button);
    const said = h('p', 'nudge-status', { role: 'status' });
    card.append(nf, said);
    nf.addEventListener('submit', async (e) => {
      e.preventDefault();
      const value = field.value.trim();
      if (!value) return;
      button.disabled = true;
      const r = await submitNudge(n.id, value);
      button.disabled = false;
      if (r.ok) {
        nf.remove();
        said.textContent = 'Thank you!';
      } else if (r.code === 'invalid_nudge') {
        said.textContent = email ? 'Please enter a valid email address.' : 'Please check your answer.';
      } else {
        said.textContent = errorText(r);
      }
      paint(said);
    });
  };
  const showNudge = (n) => {
    if (!n || typeof n.id !== 'string' || typeof n.title !== 'string' || typeof n.text !== 'string') return;
    if (shownNudges.has(n.id)) return;
    shownNudges.add(n.id);
    const card = h('section', 'nudge', { 'aria-label': n.title });
    card.append(h('p', 'nudge-title', null, n.title), formatted(h('div', 'nudge-text'), n.text));
    nudgeForm(n, card);
    append(card, true);
  };
  const nudged = (id) => {
    try {
      return window.sessionStorage.getItem(NKEY + id) === '1';
    } catch (_) {
      return false;
    }
  };
  const offer = (n) => {
    try {
      window.sessionStorage.setItem(NKEY + n.id, '1');
    } catch (_) {
      /* private mode: offered once per page */
    }
    if (isOpen()) {
      showNudge(n);
      return;
    }
    teaser.textContent = n.title;
    teaser.onclick = () => {
      show(teaser, false);
      open();
      showNudge(n);
    };
    show(teaser, true);
  };
  const pathMatches = (paths, page) => !Array.isArray(paths) || !paths.length ||
    paths.some((p) => typeof p === 'string' && (p.endsWith('*') ? page.startsWith(p.slice(0, -1)) : page === p));
  // The page's rules: the first nudge for this path, after its seconds on the page. Reading them
  // starts no chat.
  const loadNudges = async () => {
    const r = await api(SERVER + '/chat/v1/' + encodeURIComponent(BOT) + '/nudges', null, null, 'GET');
    if (!r.ok || !r.data || !Array.isArray(r.data.nudges)) return;
    const n = r.data.nudges.find((x) => x && typeof x.id === 'string' && x.rules &&
      pathMatches(x.rules.paths, location.pathname) && !nudged(x.id));
    if (!n) return;
    const seconds = Math.min(3600, Math.max(0, Number(n.rules.seconds_on_page) || 0));
    setTimeout(() => offer(n), seconds * 1000);
  };

  // ---------------------------------------------------------------- opening and closing
  const isOpen = () => !panel.hidden;
  const open = () => {
    show(panel, true);
    show(teaser, false);
    launcher.setAttribute('aria-expanded', 'true');
    launcher.setAttribute('aria-label', 'Close chat');
    if (!input.disabled) input.focus();
    else log.focus();
    scrollDown();
    if (!session && !starting && !refused) startSession(false);
  };
  const close = () => {
    show(panel, false);
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-label', 'Open chat');
    launcher.focus();
  };
  launcher.addEventListener('click', () => (isOpen() ? close() : open()));
  closeBtn.addEventListener('click', close);
  panel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      close();
    }
  });
  launcher.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && isOpen()) close();
  });
  loadNudges();
})();
