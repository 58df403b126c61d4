import type { IncomingMessage, ServerResponse } from 'node:http';
import { RegistryError } from './errors.js';

export type Headers = Record<string, string | number>;

/** Sends a complete response; `body` is omitted for HEAD but its length is still announced. */
export function send(req: IncomingMessage, res: ServerResponse, status: number, headers: Headers = {}, body?: Buffer | string): void {
  const bytes = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body) : body;
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  if (status === 204 || status === 304) res.removeHeader('Content-Length');
  else if (!res.hasHeader('Content-Length')) res.setHeader('Content-Length', bytes?.byteLength ?? 0);
  if (req.method === 'HEAD' || !bytes) res.end();
  else res.end(bytes);
}

export function sendJson(req: IncomingMessage, res: ServerResponse, status: number, value: unknown, headers: Headers = {}): void {
  send(req, res, status, { 'Content-Type': 'application/json', ...headers }, JSON.stringify(value));
}

const bodyBytes = new WeakMap<IncomingMessage, number>();

/** Records `n` more bytes of the request body read by the server (the access log's `in=`). */
export function countIn(req: IncomingMessage, n: number): void {
  bodyBytes.set(req, (bodyBytes.get(req) ?? 0) + n);
}

/** Bytes of the request body the server has read. */
export function bytesIn(req: IncomingMessage): number {
  return bodyBytes.get(req) ?? 0;
}

/** Bodies up to this size are read and dropped after an early error answer, so the client sees it. */
const DRAIN_LIMIT = 16 * 1024 * 1024;

/**
 * Answers an error. A request body not read yet (a chunk refused before its data) is read and
 * dropped when small, so the client gets the answer instead of a broken pipe; a larger one is
 * not read: the connection is closed after the answer.
 */
export function sendError(req: IncomingMessage, res: ServerResponse, err: RegistryError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: Headers = { 'Content-Type': 'application/json', ...err.headers };
  if (!req.complete) {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared <= DRAIN_LIMIT) drain(req);
    else headers.Connection = 'close';
  }
  send(req, res, err.status, headers, err.body());
}

function drain(req: IncomingMessage): void {
  let n = 0;
  req.on('data', (c: Buffer) => {
    n += c.byteLength;
    countIn(req, c.byteLength);
    if (n > DRAIN_LIMIT) req.destroy();
  });
  req.on('error', () => {});
  req.resume();
}

/** Reads a small body (a manifest) into memory; more than `cap` bytes is a 413. */
export async function readBody(req: IncomingMessage, cap: number, tooLarge: () => RegistryError): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > cap) throw tooLarge();
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    n += (chunk as Buffer).byteLength;
    countIn(req, (chunk as Buffer).byteLength);
    if (n > cap) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, n);
}

/** The media types an Accept header lists (parameters and q-values dropped); empty when absent. */
export function acceptedTypes(req: IncomingMessage): string[] {
  const raw = req.headers.accept;
  if (!raw) return [];
  return raw
    .split(',')
    .map((t) => t.split(';')[0]!.trim().toLowerCase())
    .filter(Boolean);
}

/** Content-Type without parameters, lowercased; undefined when absent. */
export function contentType(req: IncomingMessage): string | undefined {
  const raw = req.headers['content-type'];
  return raw ? raw.split(';')[0]!.trim().toLowerCase() : undefined;
}

/** `Range: 0-<last>` as distribution writes it for an upload of `size` bytes (an empty upload is "0-0"). */
export function uploadRange(size: number): string {
  return `0-${size > 0 ? size - 1 : 0}`;
}
