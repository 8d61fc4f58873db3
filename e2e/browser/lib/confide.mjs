// A real `confide serve` for the browser tests: SQLite in a temporary data directory, or a fresh
// PostgreSQL database on the server CONFIDE_TEST_DATABASE_URL names.

import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, sleep } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BINARY = process.env.CONFIDE_BIN || path.join(ROOT, 'target', 'debug', 'confide');

const SUITE_ENV = {
  CONFIDE_LOG: process.env.CONFIDE_LOG || 'info',
  CONFIDE_RATE_LIMIT_API_PER_MINUTE: '100000',
  CONFIDE_RATE_LIMIT_CREDENTIALS_PER_MINUTE: '100000',
  CONFIDE_RATE_LIMIT_CHAT_PER_MINUTE: '100000',
};

/** The storage backends to run against. */
export function backends() {
  return process.env.CONFIDE_TEST_DATABASE_URL ? ['sqlite', 'postgres'] : ['sqlite'];
}

function psql(url, sql) {
  return run('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { env: process.env }).then((r) => {
    if (r.code !== 0) throw new Error(`psql failed: ${r.stderr}`);
  });
}

function run(file, args, { input, env }) {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { env, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

export class Confide {
  /** `backend`: 'sqlite' or 'postgres'; `env`: extra environment for the server (e.g. CONFIDE_PUBLIC_URL). */
  constructor({ backend = 'sqlite', env = {} } = {}) {
    this.backend = backend;
    this.database = null;
    this.databaseUrl = null;
    this.workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'confide-e2e-browser-'));
    this.dataDir = path.join(this.workDir, 'data');
    this.logPath = path.join(this.workDir, 'server.log');
    this.env = { ...process.env, ...SUITE_ENV };
    delete this.env.CONFIDE_PUBLIC_URL;
    Object.assign(this.env, env);
    this.process = null;
    this.port = null;
  }

  /** Starts the server (again on the same port and data directory when restarted). */
  async start() {
    if (!fs.existsSync(BINARY)) {
      throw new Error(`${BINARY} does not exist: build it with \`cargo build -p confide --bin confide\` or set CONFIDE_BIN`);
    }
    if (this.backend === 'postgres' && !this.database) {
      const admin = process.env.CONFIDE_TEST_DATABASE_URL;
      this.database = `confide_e2e_browser_${randomBytes(6).toString('hex')}`;
      await psql(admin, `CREATE DATABASE ${this.database}`);
      const url = new URL(admin);
      url.pathname = `/${this.database}`;
      this.databaseUrl = url.toString();
    }
    this.port ??= await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const log = fs.openSync(this.logPath, 'a');
    const child = spawn(BINARY, [...this.globalArgs(), 'serve', '--listen', `127.0.0.1:${this.port}`], {
      env: this.env,
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    this.process = child;
    let exit = null;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then((e) => {
      exit = e;
    });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (exit) throw new Error(`confide serve exited (${JSON.stringify(exit)}):\n${this.logTail()}`);
      try {
        const res = await fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(2000) });
        if (res.status === 200) return this;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`confide serve did not become ready within 60 s:\n${this.logTail()}`);
  }

  globalArgs() {
    return ['--data-dir', this.dataDir, ...(this.databaseUrl ? ['--database-url', this.databaseUrl] : [])];
  }

  /** Stops the server process (ours, by its pid); the data directory stays. */
  async halt() {
    const child = this.process;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await this.exited;
      clearTimeout(timer);
    }
  }

  async stop() {
    await this.halt();
    if (this.database) {
      await psql(process.env.CONFIDE_TEST_DATABASE_URL, `DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`).catch(
        (err) => console.error(`could not drop ${this.database}: ${err.message}`),
      );
    }
    if (!process.env.CONFIDE_E2E_KEEP) fs.rmSync(this.workDir, { recursive: true, force: true });
  }

  logTail(lines = 60) {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  async cli(args, input) {
    const r = await run(BINARY, [...this.globalArgs(), ...args], { input, env: this.env });
    if (r.code !== 0) throw new Error(`confide ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
    return JSON.parse(r.stdout);
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

  /** `confide admin create-owner`, then a login: {orgId, userId, accessToken}. */
  async owner(email = 'o@example.com', org = 'Acme', password = 'a long passphrase 42') {
    const created = await this.cli(['admin', 'create-owner', '--email', email, '--org', org], `${password}\n`);
    const login = await this.api('POST', '/api/v1/auth/login', { body: { email, password } });
    if (login.status !== 200) throw new Error(`login: ${login.status} ${login.text}`);
    return { orgId: created.org_id, userId: created.user_id, accessToken: login.json.access_token };
  }

  async createBot(owner, name) {
    const bot = await this.api('POST', `/api/v1/orgs/${owner.orgId}/bots`, { token: owner.accessToken, body: { name } });
    if (bot.status !== 201) throw new Error(`create bot: ${bot.status} ${bot.text}`);
    return bot.json;
  }

  async chatSettings(owner, botId, settings) {
    const r = await this.api('PUT', `/api/v1/orgs/${owner.orgId}/bots/${botId}/chat-settings`, {
      token: owner.accessToken,
      body: settings,
    });
    if (r.status !== 200) throw new Error(`chat settings: ${r.status} ${r.text}`);
    return r.json;
  }
}

// A test process that dies must not leave its servers behind.
const live = new Set();
export async function startConfide(options) {
  const c = new Confide(options);
  live.add(c);
  await c.start();
  return c;
}
process.on('exit', () => {
  for (const c of live) {
    if (c.process && c.process.exitCode === null) c.process.kill('SIGKILL');
  }
});
