'use strict';
// Confide's Pusher Channels protocol 7 hub, driven by the real client libraries: pusher-js (what a
// browser or Node app connects with) and pusher (the official server SDK), on the platform app.

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
  serverSdk,
  authServer,
  rawSocket,
  rawClient,
  appUrl,
} = require('../lib/realtime');

const WRONG_SECRET = 'f'.repeat(64);

/** The same signed request must not repeat within one second (see README: replay protection). */
const lastRequest = new Map();
async function distinct(key) {
  const second = Math.floor(Date.now() / 1000);
  if (lastRequest.get(key) === second) {
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
  }
  lastRequest.set(key, Math.floor(Date.now() / 1000));
}

async function sdkGet(sdk, options) {
  await distinct(JSON.stringify(options));
  const res = await sdk.get(options);
  assert.equal(res.status, 200);
  return res.json();
}

/** The close or error code inside a pusher-js connection error event. */
const errorCode = (e) => e?.error?.data?.code ?? e?.data?.code;

/** Waits until a pusher-js connection is in `state`. */
async function settled(pusher, state, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (pusher.connection.state !== state) {
    if (Date.now() > deadline) throw new Error(`connection is ${pusher.connection.state}, expected ${state}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Waits for a pusher-js channel (already subscribing) to be subscribed. */
function ready(channel) {
  if (channel.subscribed) return Promise.resolve(channel);
  return next(channel, 'pusher:subscription_succeeded', `subscription to ${channel.name}`).then(() => channel);
}

for (const backend of backends()) {
  describe(`Pusher hub with pusher-js and the pusher SDK (${backend})`, () => {
    let confide;
    let creds;
    let sdk;
    let wrongSdk;
    let auth;

    // Adds the server's log to a failure, so a red test says what the server did.
    const test = (name, fn) =>
      it(name, { timeout: 30_000 }, async (t) => {
        try {
          await fn(t);
        } catch (err) {
          err.message += `\n--- confide serve log (tail) ---\n${confide ? confide.logTail(40) : '(not started)'}`;
          throw err;
        }
      });

    const channelAuth = (headers = {}) => ({
      channelAuthorization: { endpoint: `${auth.url}/auth`, transport: 'ajax', headers },
    });

    before(async () => {
      confide = await startConfide(backend);
      creds = await confide.realtimeCredentials();
      assert.equal(typeof creds.app_id, 'string');
      assert.equal(typeof creds.key, 'string');
      assert.equal(typeof creds.secret, 'string');
      sdk = serverSdk(creds, confide.port, {
        encryptionMasterKeyBase64: Buffer.alloc(32, 7).toString('base64'),
      });
      wrongSdk = serverSdk({ ...creds, secret: WRONG_SECRET }, confide.port);
      auth = await authServer(sdk, wrongSdk);
    });

    afterEach(() => closeClients());

    after(async () => {
      closeClients();
      if (auth) await auth.close();
      if (confide) await confide.stop();
    });

    test('pusher-js connects with the platform app key and gets a protocol 7 socket id', async () => {
      const pusher = client(creds.key, confide.port);
      await connected(pusher);
      assert.match(pusher.connection.socket_id, /^\d+\.\d+$/);
    });

    test('a private channel is authorized through our own auth endpoint (pusher.authorizeChannel) and receives an event sent with pusher.trigger', async () => {
      const pusher = client(creds.key, confide.port, channelAuth());
      await connected(pusher);
      const channel = await subscribed(pusher, 'private-orders');

      // pusher-js posted its form to our endpoint, for this very socket.
      const request = auth.requests.find((r) => r.form.channel_name === 'private-orders');
      assert.ok(request, 'the auth endpoint was called');
      assert.equal(request.form.socket_id, pusher.connection.socket_id);
      assert.match(request.headers['content-type'], /^application\/x-www-form-urlencoded/);

      const received = next(channel, 'order-shipped');
      const payload = { id: 42, note: 'ünïcödé ✓ "quoted" <b>', nested: { list: [1, 2, 3] } };
      const res = await sdk.trigger('private-orders', 'order-shipped', payload);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), {});
      assert.deepEqual(await received, payload);
    });

    test('public channels, several channels in one trigger, batch triggers and socket_id exclusion', async () => {
      const one = client(creds.key, confide.port);
      const two = client(creds.key, confide.port);
      await Promise.all([connected(one), connected(two)]);
      const [newsOne, newsTwo, sports] = await Promise.all([
        subscribed(one, 'news'),
        subscribed(two, 'news'),
        subscribed(two, 'sports'),
      ]);

      // One trigger to two channels.
      const a = next(newsOne, 'headline');
      const b = next(sports, 'headline');
      await sdk.trigger(['news', 'sports'], 'headline', { n: 1 });
      assert.deepEqual(await a, { n: 1 });
      assert.deepEqual(await b, { n: 1 });

      // socket_id excludes that connection: `one` gets it, `two` does not (it gets the next one).
      const twoSeen = record(newsTwo, 'flash');
      const oneGets = next(newsOne, 'flash');
      await sdk.trigger('news', 'flash', { n: 2 }, { socket_id: two.connection.socket_id });
      assert.deepEqual(await oneGets, { n: 2 });
      const twoGets = next(newsTwo, 'flash-2');
      await sdk.trigger('news', 'flash-2', { n: 3 });
      assert.deepEqual(await twoGets, { n: 3 });
      assert.deepEqual(twoSeen, [], 'the excluded socket got the event');

      // Batch.
      const first = next(newsOne, 'batch-a');
      const second = next(sports, 'batch-b');
      const res = await sdk.triggerBatch([
        { channel: 'news', name: 'batch-a', data: { n: 4 } },
        { channel: 'sports', name: 'batch-b', data: { n: 5 } },
      ]);
      assert.equal(res.status, 200);
      assert.deepEqual(await first, { n: 4 });
      assert.deepEqual(await second, { n: 5 });
    });

    test('private-encrypted channels: the SDK encrypts, the hub relays, pusher-js decrypts', async () => {
      const pusher = client(creds.key, confide.port, channelAuth());
      await connected(pusher);
      const channel = await subscribed(pusher, 'private-encrypted-vault');
      const request = auth.requests.find((r) => r.form.channel_name === 'private-encrypted-vault');
      assert.ok(request, 'the auth endpoint was called');
      const received = next(channel, 'secret');
      await sdk.trigger('private-encrypted-vault', 'secret', { pin: '1234' });
      assert.deepEqual(await received, { pin: '1234' });
    });

    test('presence: two clients see each other in members, get member_added and member_removed, and the SDK lists the users', async () => {
      const alice = client(creds.key, confide.port, channelAuth({ 'X-User': 'alice', 'X-User-Name': 'Alice' }));
      const bob = client(creds.key, confide.port, channelAuth({ 'X-User': 'bob', 'X-User-Name': 'Bob' }));
      await Promise.all([connected(alice), connected(bob)]);

      const lobbyA = await subscribed(alice, 'presence-lobby');
      assert.equal(lobbyA.members.count, 1);
      assert.equal(lobbyA.members.me.id, 'alice');
      assert.deepEqual(lobbyA.members.me.info, { name: 'Alice' });

      const added = next(lobbyA, 'pusher:member_added');
      const lobbyB = await subscribed(bob, 'presence-lobby');
      assert.equal(lobbyB.members.count, 2);
      assert.deepEqual(lobbyB.members.get('alice').info, { name: 'Alice' });
      assert.equal(lobbyB.members.me.id, 'bob');
      const member = await added;
      assert.equal(member.id, 'bob');
      assert.deepEqual(member.info, { name: 'Bob' });
      assert.equal(lobbyA.members.count, 2);

      const users = await sdkGet(sdk, { path: '/channels/presence-lobby/users' });
      assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);

      const info = await sdkGet(sdk, { path: '/channels/presence-lobby', params: { info: 'user_count' } });
      assert.equal(info.occupied, true);
      assert.equal(info.user_count, 2);

      const removed = next(lobbyA, 'pusher:member_removed');
      bob.disconnect();
      assert.equal((await removed).id, 'bob');
      assert.equal(lobbyA.members.count, 1);

      const after = await sdkGet(sdk, { path: '/channels/presence-lobby/users' });
      assert.deepEqual(after.users.map((u) => u.id), ['alice']);
    });

    test('a user connected twice is one member: member_removed only when the last connection leaves', async () => {
      const watcher = client(creds.key, confide.port, channelAuth({ 'X-User': 'watcher' }));
      const tab1 = client(creds.key, confide.port, channelAuth({ 'X-User': 'carol' }));
      const tab2 = client(creds.key, confide.port, channelAuth({ 'X-User': 'carol' }));
      await Promise.all([connected(watcher), connected(tab1), connected(tab2)]);
      const room = await subscribed(watcher, 'presence-tabs');
      const addedSeen = record(room, 'pusher:member_added');
      const removedSeen = record(room, 'pusher:member_removed');
      await subscribed(tab1, 'presence-tabs');
      await until(addedSeen, 1, 'member_added for carol');
      const second = await subscribed(tab2, 'presence-tabs');
      assert.equal(second.members.count, 2);
      tab1.disconnect();
      // Proof of order: after tab1 left, a third user joins; the watcher sees that join and no removal of carol.
      const dave = client(creds.key, confide.port, channelAuth({ 'X-User': 'dave' }));
      await connected(dave);
      await subscribed(dave, 'presence-tabs');
      await until(addedSeen, 2, 'member_added for dave');
      assert.deepEqual(addedSeen.map((m) => m.id), ['carol', 'dave']);
      assert.deepEqual(removedSeen, [], 'carol still has a connection');
      tab2.disconnect();
      await until(removedSeen, 1, 'member_removed for carol');
      assert.equal(removedSeen[0].id, 'carol');
    });

    test('user sign-in with pusher.authenticateUser succeeds, and pusher.sendToUser reaches the signed-in user', async () => {
      const pusher = client(creds.key, confide.port, {
        userAuthentication: { endpoint: `${auth.url}/user-auth`, transport: 'ajax', headers: { 'X-User': 'erin' } },
      });
      await connected(pusher);
      const errors = record(pusher.user, 'pusher:signin_error');
      pusher.signin();
      await within(pusher.user.signinDonePromise, 10_000, 'pusher:signin_success');
      assert.deepEqual(errors, []);
      assert.deepEqual(pusher.user.user_data, { id: 'erin', user_info: { name: 'erin' } });
      assert.equal(pusher.connection.state, 'connected');

      // pusher-js subscribes to #server-to-user-erin after signing in.
      await ready(pusher.user.serverToUserChannel);
      const received = next(pusher.user, 'notice');
      const res = await sdk.sendToUser('erin', 'notice', { text: 'only for erin' });
      assert.equal(res.status, 200);
      assert.deepEqual(await received, { text: 'only for erin' });
    });

    test("pusher.terminateUserConnections closes the signed-in user's connections and no one else's", async () => {
      const signIn = (user) =>
        client(creds.key, confide.port, {
          userAuthentication: { endpoint: `${auth.url}/user-auth`, transport: 'ajax', headers: { 'X-User': user } },
        });
      const ivan = signIn('ivan');
      const judy = signIn('judy');
      await Promise.all([connected(ivan), connected(judy)]);
      ivan.signin();
      judy.signin();
      await within(Promise.all([ivan.user.signinDonePromise, judy.user.signinDonePromise]), 10_000, 'sign-ins');
      assert.equal(ivan.user.user_data?.id, 'ivan');
      assert.equal(judy.user.user_data?.id, 'judy');
      const ivanErrors = record(ivan.connection, 'error');
      const res = await sdk.terminateUserConnections('ivan');
      assert.equal(res.status, 200);
      await settled(ivan, 'disconnected');
      assert.ok(ivanErrors.map(errorCode).includes(4009), JSON.stringify(ivanErrors));
      // judy is untouched: an event still reaches her.
      const channel = await subscribed(judy, 'after-terminate');
      const got = next(channel, 'still-here');
      await sdk.trigger('after-terminate', 'still-here', { ok: 1 });
      assert.deepEqual(await got, { ok: 1 });
      assert.equal(judy.connection.state, 'connected');
    });

    test('a socket not signed in as that user cannot subscribe to #server-to-user-{id} (raw protocol)', async () => {
      // pusher-js itself refuses to subscribe to '#' channels by hand, so this speaks the protocol directly.
      const raw = rawClient(appUrl(confide.port, creds.key));
      await raw.waitFor((f) => f.event === 'pusher:connection_established', 'connection_established');
      raw.send('pusher:subscribe', { channel: '#server-to-user-erin' });
      const outcome = await raw.waitFor(
        (f) =>
          (f.channel === '#server-to-user-erin' &&
            ['pusher:subscription_error', 'pusher_internal:subscription_succeeded'].includes(f.event)) ||
          f.event === 'pusher:error',
        'the outcome of the subscription',
      );
      assert.notEqual(outcome.event, 'pusher_internal:subscription_succeeded', JSON.stringify(outcome));
      raw.ws.close(1000);
      await raw.closed;
    });

    test('client events between two clients on a private channel are delivered and not echoed to the sender', async () => {
      const a = client(creds.key, confide.port, channelAuth());
      const b = client(creds.key, confide.port, channelAuth());
      await Promise.all([connected(a), connected(b)]);
      const roomA = await subscribed(a, 'private-room');
      const roomB = await subscribed(b, 'private-room');
      const echoed = record(roomA, 'client-typing');

      const atB = next(roomB, 'client-typing');
      assert.equal(roomA.trigger('client-typing', { who: 'a' }), true);
      assert.deepEqual(await atB, { who: 'a' });

      // b answers only after it got a's event, so an echo to a would have arrived before the answer.
      const atA = next(roomA, 'client-ack');
      assert.equal(roomB.trigger('client-ack', { who: 'b' }), true);
      assert.deepEqual(await atA, { who: 'b' });
      assert.deepEqual(echoed, [], 'the sender got its own client event back');
      assert.equal(a.connection.state, 'connected');
      assert.equal(b.connection.state, 'connected');
    });

    test('a client over the client-event rate limit is closed with 4301 and pusher-js does not reconnect', async () => {
      const a = client(creds.key, confide.port, channelAuth());
      const b = client(creds.key, confide.port, channelAuth());
      await Promise.all([connected(a), connected(b)]);
      const burstA = await subscribed(a, 'private-burst');
      const burstB = await subscribed(b, 'private-burst');
      const delivered = record(burstB, 'client-spam');
      const errors = record(a.connection, 'error');
      for (let i = 0; i < 25; i += 1) burstA.trigger('client-spam', { i });
      await settled(a, 'disconnected');
      assert.ok(errors.map(errorCode).includes(4301), JSON.stringify(errors));
      // b is fine and got at most the allowed burst (Pusher: 10 per second).
      const after = next(burstB, 'after-spam');
      await sdk.trigger('private-burst', 'after-spam', { done: true });
      assert.deepEqual(await after, { done: true });
      assert.ok(delivered.length >= 1 && delivered.length <= 10, `delivered ${delivered.length}`);
      assert.deepEqual(
        delivered.map((d) => d.i),
        [...Array(delivered.length).keys()],
        'delivered in order, without gaps',
      );
      assert.equal(b.connection.state, 'connected');
    });

    test('client events on a presence channel carry the sender user_id', async () => {
      const a = client(creds.key, confide.port, channelAuth({ 'X-User': 'frank' }));
      const b = client(creds.key, confide.port, channelAuth({ 'X-User': 'grace' }));
      await Promise.all([connected(a), connected(b)]);
      const roomA = await subscribed(a, 'presence-chatroom');
      const roomB = await subscribed(b, 'presence-chatroom');
      const got = within(
        new Promise((resolve) => roomB.bind('client-wave', (data, metadata) => resolve({ data, metadata }))),
        10_000,
        'client-wave',
      );
      roomA.trigger('client-wave', { hi: true });
      const { data, metadata } = await got;
      assert.deepEqual(data, { hi: true });
      assert.equal(metadata.user_id, 'frank');
    });

    test('a wrong auth signature gets pusher:subscription_error and the connection stays up', async () => {
      const pusher = client(creds.key, confide.port, {
        channelAuthorization: { endpoint: `${auth.url}/wrong-auth`, transport: 'ajax' },
      });
      await connected(pusher);
      const socketId = pusher.connection.socket_id;
      const channel = pusher.subscribe('private-vault');
      const error = await next(channel, 'pusher:subscription_error');
      assert.equal(error.type, 'AuthError');
      assert.equal(error.status, 401);
      assert.equal(typeof error.error, 'string');
      assert.equal(channel.subscribed, false);

      // Same socket, still usable.
      assert.equal(pusher.connection.state, 'connected');
      assert.equal(pusher.connection.socket_id, socketId);
      const news = await subscribed(pusher, 'news-after-error');
      const received = next(news, 'ping-event');
      await sdk.trigger('news-after-error', 'ping-event', { ok: true });
      assert.deepEqual(await received, { ok: true });
      assert.equal(pusher.connection.socket_id, socketId);
    });

    test('the raw protocol: a bad subscription gets a subscription_error frame, and pusher:ping still gets pusher:pong', async () => {
      const raw = rawClient(appUrl(confide.port, creds.key));
      const established = await raw.waitFor((f) => f.event === 'pusher:connection_established', 'connection_established');
      assert.equal(typeof established.data, 'string', 'connection_established data is a JSON string');
      const { socket_id: socketId, activity_timeout: activity } = JSON.parse(established.data);
      assert.match(socketId, /^\d+\.\d+$/);
      assert.ok(activity > 0);

      raw.send('pusher:subscribe', { channel: 'private-x', auth: `${creds.key}:${'0'.repeat(64)}` });
      const error = await raw.waitFor((f) => f.event === 'pusher:subscription_error', 'subscription_error');
      assert.equal(error.channel, 'private-x');
      const data = typeof error.data === 'string' ? JSON.parse(error.data) : error.data;
      assert.equal(data.type, 'AuthError');
      assert.equal(data.status, 401);

      raw.send('pusher:ping', {});
      await raw.waitFor((f) => f.event === 'pusher:pong', 'pusher:pong');
      raw.ws.close(1000);
      const result = await raw.closed;
      assert.equal(result.opened, true);
    });

    test('an unknown app key: pusher:error 4001 and close code 4001 (raw ws)', async () => {
      const { closed } = rawSocket(appUrl(confide.port, 'no-such-app-key'));
      const result = await closed;
      assert.equal(result.upgradeStatus, null, `the handshake was answered with HTTP ${result.upgradeStatus}`);
      assert.equal(result.code, 4001);
      const error = result.frames.find((f) => f.event === 'pusher:error');
      assert.ok(error, `a pusher:error frame before the close; got ${JSON.stringify(result.frames)}`);
      assert.equal(error.data.code, 4001);
    });

    test('an unknown app key: pusher-js reports error 4001 and does not reconnect', async () => {
      const pusher = client('no-such-app-key', confide.port);
      const errors = record(pusher.connection, 'error');
      const states = record(pusher.connection, 'state_change');
      await until(errors, 1, 'a connection error');
      const codes = errors.map(errorCode);
      assert.ok(codes.includes(4001), `error codes: ${JSON.stringify(errors)}`);
      await settled(pusher, 'disconnected');
      // pusher-js keeps retrying from 'connecting'/'unavailable'; 'disconnected' means it gave up for good.
      assert.ok(!states.some((s) => s.current === 'connected'), `states: ${JSON.stringify(states)}`);
    });

    test('sign-in with a wrong signature closes the connection with 4009', async () => {
      const pusher = client(creds.key, confide.port, {
        userAuthentication: {
          endpoint: `${auth.url}/wrong-user-auth`,
          transport: 'ajax',
          headers: { 'X-User': 'mallory' },
        },
      });
      await connected(pusher);
      const errors = record(pusher.connection, 'error');
      pusher.signin();
      await until(errors, 1, 'a connection error');
      await settled(pusher, 'disconnected');
      const codes = errors.map(errorCode);
      assert.ok(codes.length > 0 && codes.every((c) => c === 4009), `errors: ${JSON.stringify(errors)}`);
      assert.equal(pusher.user.user_data, null);
    });

    test('pusher.trigger with a bad secret is refused with 401; the right secret works', async () => {
      await assert.rejects(wrongSdk.trigger('news', 'forged', { evil: true }), (err) => {
        assert.equal(err.status, 401, `status ${err.status}: ${err.body}`);
        return true;
      });
      const unknownApp = serverSdk({ ...creds, app_id: 'no-such-app' }, confide.port);
      await assert.rejects(unknownApp.trigger('news', 'forged', { n: 1 }), (err) => {
        assert.ok([401, 403, 404].includes(err.status), `status ${err.status}: ${err.body}`);
        return true;
      });
      const res = await sdk.trigger('news', 'genuine', { ok: true });
      assert.equal(res.status, 200);
    });

    test('pusher.get lists occupied channels, filters by prefix and tells presence user counts', async () => {
      const pusher = client(creds.key, confide.port, channelAuth({ 'X-User': 'heidi' }));
      await connected(pusher);
      await subscribed(pusher, 'private-ledger');
      await subscribed(pusher, 'presence-desk');
      await subscribed(pusher, 'weather');

      const all = await sdkGet(sdk, { path: '/channels' });
      assert.ok(all.channels && typeof all.channels === 'object', JSON.stringify(all));
      for (const name of ['private-ledger', 'presence-desk', 'weather']) {
        assert.ok(name in all.channels, `${name} in ${JSON.stringify(all)}`);
      }

      const presence = await sdkGet(sdk, {
        path: '/channels',
        params: { filter_by_prefix: 'presence-', info: 'user_count' },
      });
      assert.deepEqual(Object.keys(presence.channels), ['presence-desk']);
      assert.equal(presence.channels['presence-desk'].user_count, 1);

      const one = await sdkGet(sdk, { path: '/channels/private-ledger' });
      assert.equal(one.occupied, true);
      const empty = await sdkGet(sdk, { path: '/channels/private-nobody-here' });
      assert.equal(empty.occupied, false);

      await assert.rejects(wrongSdk.get({ path: '/channels' }), (err) => {
        assert.equal(err.status, 401, `status ${err.status}: ${err.body}`);
        return true;
      });
    });

    test('a signature made with a clock 11 minutes off is refused as stale (401)', async () => {
      const realNow = Date.now;
      for (const skew of [-660_000, 660_000]) {
        Date.now = () => realNow() + skew;
        let attempt;
        try {
          attempt = sdk.trigger('news', 'stale', { skew });
        } finally {
          Date.now = realNow;
        }
        await assert.rejects(attempt, (err) => {
          assert.equal(err.status, 401, `skew ${skew}: status ${err.status}: ${err.body}`);
          return true;
        });
      }
    });

    // Pusher's own service accepts this; Confide refuses replayed signatures (issue 3), and the SDK's
    // signature only changes with the second, the body and the query. Kept as a TODO so the conflict
    // stays visible without failing the suite: see README.md.
    it('the SDK can send the same trigger twice within one second', {
      timeout: 30_000,
      todo: 'design conflict: replay protection vs. the official SDK repeating a request within a second',
    }, async () => {
      // Both within the same Unix second.
      if (Date.now() % 1000 > 700) await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
      const payload = { same: true, at: Date.now() };
      await sdk.trigger('news', 'repeat', payload);
      await sdk.trigger('news', 'repeat', payload).catch((err) => {
        throw new Error(`second identical trigger: ${err.status} ${err.body}`);
      });
    });

    test('an event over 10 KB is refused by the HTTP API with 413', async () => {
      await assert.rejects(sdk.trigger('news', 'huge', { blob: 'x'.repeat(11 * 1024) }), (err) => {
        assert.equal(err.status, 413, `status ${err.status}: ${err.body}`);
        return true;
      });
    });
  });
}
