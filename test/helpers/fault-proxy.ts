import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  /** Body bytes sent up (request) and down (response) so far. */
  up: number;
  down: number;
  /** The status the client was sent, once known. */
  status?: number;
}

/**
 * What the proxy does with one request. Return undefined to forward it untouched.
 * - status: answer with this status (and headers/body) instead of forwarding
 * - resetAfter: forward, but cut the connection after this many body bytes of the response
 * - flipByte: forward, flipping one byte of the response body at this offset
 * - redirect: answer 307 to this URL
 * - replaceBody: forward the status and headers but send this body instead
 * - setHeaders: forward, overriding these response headers
 * - dropRequestHeaders: forward without these request headers (e.g. ignore Range)
 * - delayMs: forward only after this long (a registry far away)
 * - truncate: forward, but only the first this many body bytes, with a Content-Length that says so,
 *   ending cleanly (a body short of the descriptor's size that is not a network failure)
 * - trailing: after the body (forwarded, or `body` with `status`), keep sending filler bytes,
 *   without a Content-Length, up to this many (Infinity: until the client goes away)
 * - dropResponseHeaders: forward without these response headers
 * - drop: close the connection without an answer (a registry that died: the client sees a reset)
 * - dropResponse: forward, then cut the client's connection instead of passing the answer on (the
 *   registry did the request; the client never learns it)
 */
export interface Fault {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  resetAfter?: number;
  flipByte?: number;
  redirect?: string;
  replaceBody?: Buffer;
  setHeaders?: Record<string, string>;
  dropRequestHeaders?: string[];
  delayMs?: number;
  truncate?: number;
  trailing?: number;
  dropResponseHeaders?: string[];
  drop?: boolean;
  dropResponse?: boolean;
}

export type FaultRule = (req: SeenRequest, count: number) => Fault | undefined;

export interface FaultProxy {
  host: string;
  seen: SeenRequest[];
  /** TCP connections clients have opened to the proxy so far. */
  connections(): number;
  /** The most requests in progress at once since the last call (then counting starts again). */
  peakInFlight(): number;
  /** Replace the rule; `count` is how often the rule has matched so far (per rule). */
  setRule(rule: FaultRule | undefined): void;
  /**
   * Body bytes through the proxy, both ways, of the requests seen since `since` (an index into
   * `seen`; default: all). Counting by request keeps a killed client's late bytes out of a rerun's.
   */
  bytes(since?: number): { up: number; down: number };
  /** Limit body bytes (both ways together) to this many per second; undefined: unlimited. */
  setRate(bytesPerSecond: number | undefined): void;
  stop(): Promise<void>;
}

/** An HTTP proxy in front of a registry that injects the faults of catalogue groups C and D. */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const [uhost, uport] = upstream.split(':');
  const seen: SeenRequest[] = [];
  let rule: FaultRule | undefined;
  let matched = 0;
  let rate: number | undefined;
  let nextFree = 0;
  /** Pauses `from` long enough that bytes leave at no more than `rate` per second. */
  const pace = (from: { pause(): unknown; resume(): unknown }, n: number) => {
    if (!rate) return;
    const now = Date.now();
    nextFree = Math.max(nextFree, now) + (n / rate) * 1000;
    if (nextFree - now > 2) {
      from.pause();
      setTimeout(() => from.resume(), nextFree - now);
    }
  };
  let inFlight = 0;
  let peak = 0;
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const s: SeenRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, up: 0, down: 0 };
    seen.push(s);
    peak = Math.max(peak, ++inFlight);
    res.on('close', () => inFlight--);
    const fault = rule?.(s, matched);
    if (fault) matched++;
    if (fault?.delayMs) setTimeout(() => respond(req, res, s, fault), fault.delayMs);
    else respond(req, res, s, fault);
  });
  const respond = (req: IncomingMessage, res: ServerResponse, s: SeenRequest, fault: Fault | undefined) => {
    if (fault?.drop) {
      req.socket.destroy();
      return;
    }
    if (fault?.status !== undefined) {
      req.resume();
      if (fault.trailing !== undefined) {
        s.status = fault.status;
        res.writeHead(fault.status, fault.headers ?? {});
        const head = Buffer.from(fault.body ?? '');
        s.down += head.byteLength;
        res.write(head);
        fill(res, s, fault.trailing);
        return;
      }
      res.writeHead(fault.status, fault.headers ?? {}).end(fault.body ?? '');
      return;
    }
    if (fault?.redirect) {
      req.resume();
      res.writeHead(307, { location: fault.redirect }).end();
      return;
    }
    const headers: Record<string, string | string[] | undefined> = { ...req.headers, host: upstream };
    for (const h of fault?.dropRequestHeaders ?? []) delete headers[h];
    const up = httpRequest({ host: uhost, port: Number(uport), method: req.method, path: req.url, headers }, (ures) => {
      if (fault?.dropResponse) {
        ures.resume();
        res.socket?.destroy();
        return;
      }
      const outHeaders = { ...ures.headers };
      // Rewrite absolute Locations so uploads keep going through the proxy.
      if (outHeaders.location) outHeaders.location = outHeaders.location.replace(`//${upstream}`, `//${proxyHost}`);
      Object.assign(outHeaders, fault?.setHeaders ?? {});
      for (const h of fault?.dropResponseHeaders ?? []) delete outHeaders[h.toLowerCase()];
      if (fault?.truncate !== undefined) outHeaders['content-length'] = String(Math.min(fault.truncate, Number(outHeaders['content-length'] ?? Infinity)));
      if (fault?.trailing !== undefined) delete outHeaders['content-length'];
      if (fault?.replaceBody) {
        ures.resume();
        outHeaders['content-length'] = String(fault.replaceBody.byteLength);
        res.writeHead(ures.statusCode ?? 502, outHeaders).end(fault.replaceBody);
        return;
      }
      s.status = ures.statusCode;
      res.writeHead(ures.statusCode ?? 502, outHeaders);
      // A client that went away (killed) stops the transfer: no bytes are counted for nobody.
      res.on('close', () => ures.destroy());
      let sent = 0;
      ures.on('data', (chunk: Buffer) => {
        if (res.writableEnded) return;
        let c = chunk;
        if (fault?.flipByte !== undefined && fault.flipByte >= sent && fault.flipByte < sent + c.byteLength) {
          c = Buffer.from(c);
          c[fault.flipByte - sent]! ^= 0xff;
        }
        if (fault?.truncate !== undefined && sent + c.byteLength >= fault.truncate) {
          c = c.subarray(0, Math.max(0, fault.truncate - sent));
          sent += c.byteLength;
          s.down += c.byteLength;
          res.end(c);
          ures.destroy();
          return;
        }
        if (fault?.resetAfter !== undefined && sent + c.byteLength > fault.resetAfter) {
          res.write(c.subarray(0, Math.max(0, fault.resetAfter - sent)));
          res.socket?.destroy();
          ures.destroy();
          return;
        }
        sent += c.byteLength;
        s.down += c.byteLength;
        res.write(c);
        pace(ures, c.byteLength);
      });
      ures.on('end', () => (fault?.trailing !== undefined ? fill(res, s, fault.trailing) : res.end()));
      // The registry broke off a response (distribution's 416 announces 8 bytes and sends none): so does the proxy.
      ures.on('error', () => {
        res.flushHeaders();
        setImmediate(() => res.destroy());
      });
    });
    up.on('error', () => res.destroy());
    req.on('data', (c: Buffer) => {
      s.up += c.byteLength;
      up.write(c);
      pace(req, c.byteLength);
    });
    req.on('end', () => up.end());
    req.on('error', () => up.destroy());
  };
  /** Filler bytes after a body, as fast as the client takes them, until `n` are sent or it goes away. */
  const fill = (res: ServerResponse, s: SeenRequest, n: number) => {
    // A HEAD response has no body: its writes would never push back.
    if (s.method === 'HEAD') {
      res.end();
      return;
    }
    const filler = Buffer.alloc(64 << 10, 0x20);
    let left = n;
    let gone = false;
    res.on('close', () => (gone = true));
    const more = () => {
      while (!gone && left > 0) {
        const c = left >= filler.byteLength ? filler : filler.subarray(0, left);
        left -= c.byteLength;
        s.down += c.byteLength;
        if (!res.write(c)) {
          res.once('drain', more);
          return;
        }
      }
      if (!gone) res.end();
    };
    more();
  };
  let connections = 0;
  server.on('connection', () => connections++);
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  const proxyHost = `127.0.0.1:${port}`;
  return {
    host: proxyHost,
    seen,
    connections: () => connections,
    peakInFlight: () => {
      const p = peak;
      peak = inFlight;
      return p;
    },
    setRule(r) {
      rule = r;
      matched = 0;
    },
    bytes: (since = 0) => seen.slice(since).reduce((t, q) => ({ up: t.up + q.up, down: t.down + q.down }), { up: 0, down: 0 }),
    setRate(r) {
      rate = r;
      nextFree = 0;
    },
    stop: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
