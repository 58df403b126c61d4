import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';

export interface ConnectProxy {
  /** http://USER:PASSWORD@127.0.0.1:PORT when credentials are required, else http://127.0.0.1:PORT. */
  url: string;
  /** Every CONNECT target asked for, with the Proxy-Authorization it carried. */
  tunnels: Array<{ target: string; authorization?: string }>;
  /** Requests that came as plain proxy requests (absolute URLs: plain http) instead of tunnels. */
  forwarded: string[];
  stop(): Promise<void>;
}

/**
 * An HTTP proxy like a corporate egress proxy: CONNECT tunnels, and plain http requests forwarded.
 * It resolves the names
 * in `hosts` itself (name:port -> 127.0.0.1:port), so a registry "elsewhere" stays on loopback,
 * and with `credentials` it answers 407 to a tunnel request without them.
 */
export async function startConnectProxy(o: { hosts: Record<string, string>; credentials?: { user: string; password: string } }): Promise<ConnectProxy> {
  const tunnels: ConnectProxy['tunnels'] = [];
  const forwarded: string[] = [];
  const sockets = new Set<Socket>();
  const expected = o.credentials ? `Basic ${Buffer.from(`${o.credentials.user}:${o.credentials.password}`).toString('base64')}` : undefined;
  // Plain http through a proxy comes as absolute URLs ("GET http://host:port/path"), not tunnels.
  const server = createServer((req, res) => {
    forwarded.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'http://invalid');
    const mapped = o.hosts[url.host];
    if (url.protocol !== 'http:' || !mapped) {
      res.writeHead(502).end();
      return;
    }
    if (expected && req.headers['proxy-authorization'] !== expected) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="test"' }).end();
      return;
    }
    const [host, port] = mapped.split(':');
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const up = httpRequest({ host, port: Number(port), method: req.method, path: url.pathname + url.search, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    const target = req.url ?? '';
    const authorization = req.headers['proxy-authorization'];
    tunnels.push({ target, authorization });
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (expected && authorization !== expected) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const mapped = o.hosts[target];
    if (!mapped) {
      client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const [host, port] = mapped.split(':');
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
  const auth = o.credentials ? `${encodeURIComponent(o.credentials.user)}:${encodeURIComponent(o.credentials.password)}@` : '';
  return {
    url: `http://${auth}127.0.0.1:${port}`,
    tunnels,
    forwarded,
    stop: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}
