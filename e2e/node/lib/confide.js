'use strict';
// Starts a real `confide serve` process for the end-to-end tests: on SQLite, and on a fresh
// PostgreSQL database when CONFIDE_TEST_DATABASE_URL is set. Nothing here talks to anything but
// the local server and the local database.

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BINARY = process.env.CONFIDE_BIN || path.join(ROOT, 'target', 'debug', 'confide');

/** The storage backends to run against. */
function backends() {
  return process.env.CONFIDE_TEST_DATABASE_URL ? ['sqlite', 'postgres'] : ['sqlite'];
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Runs a program; resolves with {code, stdout, stderr}. */
function run(file, args, { input, env, timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

function psql(url, sql) {
  return run('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', sql]).then((r) => {
    if (r.code !== 0) throw new Error(`psql failed: ${r.stderr}`);
  });
}

/** `postgres://user@host:port/db?x` with the database name replaced. */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

const SUITE_ENV = {
  CONFIDE_RATE_LIMIT_API_PER_MINUTE: '100000',
  CONFIDE_RATE_LIMIT_CREDENTIALS_PER_MINUTE: '100000',
  CONFIDE_RATE_LIMIT_CHAT_PER_MINUTE: '100000',
};

class Confide {
  constructor(backend) {
    this.backend = backend;
    this.workDir = fs.mkdtempSync(path.join(os.tmpdir(), `confide-e2e-node-${backend}-`));
    this.dataDir = path.join(this.workDir, 'data');
    this.logPath = path.join(this.workDir, 'server.log');
    this.process = null;
    this.database = null;
    this.env = { ...process.env, CONFIDE_LOG: process.env.CONFIDE_LOG || 'warn', ...SUITE_ENV };
    delete this.env.CONFIDE_PUBLIC_URL;
  }

  /** Global arguments naming the data directory and, on PostgreSQL, the database. */
  globalArgs() {
    const args = ['--data-dir', this.dataDir];
    if (this.databaseUrl) args.push('--database-url', this.databaseUrl);
    return args;
  }

  async start() {
    if (!fs.existsSync(BINARY)) {
      throw new Error(`${BINARY} does not exist: build it with \`cargo build -p confide --bin confide\` or set CONFIDE_BIN`);
    }
    if (this.backend === 'postgres') {
      const admin = process.env.CONFIDE_TEST_DATABASE_URL;
      this.database = `confide_e2e_node_${crypto.randomBytes(6).toString('hex')}`;
      await psql(admin, `CREATE DATABASE ${this.database}`);
      this.databaseUrl = withDatabase(admin, this.database);
    }
    this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const log = fs.openSync(this.logPath, 'a');
    this.process = spawn(BINARY, [...this.globalArgs(), 'serve', '--listen', `127.0.0.1:${this.port}`], {
      env: this.env,
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    this.exited = new Promise((resolve) => this.process.once('exit', (code, signal) => resolve({ code, signal })));
    let exit = null;
    this.exited.then((e) => { exit = e; });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (exit) throw new Error(`confide serve exited (${JSON.stringify(exit)}):\n${this.logTail()}`);
      try {
        const res = await fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(2000) });
        if (res.status === 200) return this;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`confide serve did not become ready within 60 s:\n${this.logTail()}`);
  }

  logTail(lines = 60) {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Runs `confide GLOBAL_ARGS ...args`; fails unless it exits 0; returns parsed JSON stdout. */
  async cli(args, input) {
    const r = await run(BINARY, [...this.globalArgs(), ...args], { input, env: this.env });
    if (r.code !== 0) throw new Error(`confide ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  /** The platform Pusher app: {app_id, key, secret}. */
  realtimeCredentials() {
    return this.cli(['admin', 'realtime-credentials']);
  }

  async api(method, pathname, { token, body, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await fetch(this.base + pathname, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.status, json, text, headers: res.headers };
  }

  /** Creates an organization and its owner and signs in: {orgId, userId, accessToken}. */
  async owner(email = 'o@example.com', org = 'Acme') {
    const password = 'some long passphrase 42';
    const created = await this.cli(['admin', 'create-owner', '--email', email, '--org', org], `${password}\n`);
    const login = await this.api('POST', '/api/v1/auth/login', { body: { email, password } });
    if (login.status !== 200) throw new Error(`login: ${login.status} ${login.text}`);
    return { orgId: created.org_id, userId: created.user_id, accessToken: login.json.access_token };
  }

  /** Creates a bot with chat settings; returns the bot view ({id, key, ...}). */
  async bot(owner, { name, greeting, fallbackReply, allowedDomains = [] }) {
    const bot = await this.api('POST', `/api/v1/orgs/${owner.orgId}/bots`, {
      token: owner.accessToken,
      body: { name },
    });
    if (bot.status !== 201) throw new Error(`create bot: ${bot.status} ${bot.text}`);
    const settings = await this.api('PUT', `/api/v1/orgs/${owner.orgId}/bots/${bot.json.id}/chat-settings`, {
      token: owner.accessToken,
      body: { greeting, fallback_reply: fallbackReply, allowed_domains: allowedDomains },
    });
    if (settings.status !== 200) throw new Error(`chat settings: ${settings.status} ${settings.text}`);
    return bot.json;
  }

  async stop() {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process.kill('SIGKILL'), 20_000);
      await this.exited;
      clearTimeout(timer);
    }
    if (this.database) {
      await psql(process.env.CONFIDE_TEST_DATABASE_URL, `DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`).catch(
        (err) => console.error(`could not drop ${this.database}: ${err.message}`),
      );
    }
    if (!process.env.CONFIDE_E2E_KEEP) fs.rmSync(this.workDir, { recursive: true, force: true });
  }
}

// A test process that dies must not leave servers behind.
const live = new Set();
process.on('exit', () => {
  for (const c of live) {
    if (c.process && c.process.exitCode === null) c.process.kill('SIGKILL');
  }
});

async function startConfide(backend) {
  const confide = new Confide(backend);
  live.add(confide);
  await confide.start();
  return confide;
}

module.exports = { backends, startConfide, freePort, BINARY };
