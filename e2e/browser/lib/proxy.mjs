// A TCP proxy in front of `confide serve`, standing for the network between the visitor and the
// server: the tests cut every connection through it and keep the server unreachable for a while,
// which a browser sees as a real connection loss (close code 1006), and the server as a vanished peer.

import net from 'node:net';

export async function startProxy() {
  const sockets = new Set();
  const waiting = []; // connections accepted while the way is closed
  let held = false;
  const proxy = {
    targetPort: null,
    port: null,
    url: null,
    /** Connections waiting for release(). */
    waiting,
    /** Cuts every connection and accepts new ones without forwarding them until release(). */
    cut() {
      held = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    release() {
      held = false;
      for (const client of waiting.splice(0)) forward(client);
    },
    close: () => new Promise((resolve) => {
      for (const s of [...sockets, ...waiting]) s.destroy();
      server.close(() => resolve());
    }),
  };
  const forward = (client) => {
    if (client.destroyed) return;
    const upstream = net.connect(proxy.targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const server = net.createServer((client) => {
    if (held) {
      client.on('error', () => client.destroy());
      waiting.push(client);
    } else {
      forward(client);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = server.address().port;
  proxy.url = `http://127.0.0.1:${proxy.port}`;
  return proxy;
}
