import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { FerryError } from '../errors.js';
import { warn } from '../log.js';
import { bcryptHash, bcryptVerify, isBcryptHash } from './bcrypt.js';

const CACHE_MS = 5 * 60_000;
const CACHE_MAX = 1000;

/**
 * Users from an Apache htpasswd file: bcrypt entries (`htpasswd -B`, what distribution accepts)
 * and `{SHA}` entries. bcrypt is slow on purpose, so a verified password is remembered for five
 * minutes under a hash of user, password and entry (the password itself is never kept).
 */
export class Htpasswd {
  private readonly verified = new Map<string, number>();
  private dummy?: string;

  private constructor(private readonly users: Map<string, string>) {}

  static async load(path: string): Promise<Htpasswd> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new FerryError(code === 'ENOENT' ? 'NOT_FOUND' : 'IO', `cannot read htpasswd file ${path}: ${code ?? (e as Error).message}`, {
        hint: 'create it with: htpasswd -Bc FILE USER',
      });
    }
    const users = new Map<string, string>();
    text.split(/\r?\n/).forEach((line, i) => {
      if (line.trim() === '' || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      const user = line.slice(0, colon);
      const hash = line.slice(colon + 1).trim();
      if (colon <= 0) return warn(`${path}:${i + 1}: not a "user:hash" line; ignored`);
      if (!isBcryptHash(hash) && !hash.startsWith('{SHA}')) {
        return warn(`${path}:${i + 1}: user "${user}" has an unsupported password hash (ferry accepts bcrypt, from htpasswd -B, and {SHA}, from htpasswd -s); ignored`);
      }
      users.set(user, hash);
    });
    if (users.size === 0) warn(`${path} has no usable users: every request will be refused`);
    return new Htpasswd(users);
  }

  get size(): number {
    return this.users.size;
  }

  verify(user: string, password: string): boolean {
    const hash = this.users.get(user);
    const key = createHash('sha256').update(`${user}\0${password}\0${hash ?? ''}`).digest('hex');
    const until = this.verified.get(key);
    if (until !== undefined && until > Date.now()) return true;
    // Unknown users cost as much as known ones, so timing does not tell which names exist.
    const ok = hash === undefined ? (bcryptVerify(password, this.dummyHash()), false) : check(password, hash);
    if (ok) {
      if (this.verified.size >= CACHE_MAX) this.verified.clear();
      this.verified.set(key, Date.now() + CACHE_MS);
    }
    return ok;
  }

  private dummyHash(): string {
    if (!this.dummy) {
      const cost = [...this.users.values()].find(isBcryptHash)?.slice(4, 6) ?? '05';
      this.dummy = bcryptHash(randomBytes(9).toString('hex'), `$2y$${cost}$${'a'.repeat(22)}`);
    }
    return this.dummy;
  }
}

function check(password: string, hash: string): boolean {
  if (isBcryptHash(hash)) return bcryptVerify(password, hash);
  const expected = Buffer.from(hash.slice('{SHA}'.length));
  const actual = Buffer.from(createHash('sha1').update(password).digest('base64'));
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
