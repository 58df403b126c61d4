import { timingSafeEqual } from 'node:crypto';

/*
 * bcrypt verification (Provos & Mazières, "A Future-Adaptable Password Scheme", 1999), for the
 * `$2a$`/`$2b$`/`$2y$` entries `htpasswd -B` writes. node:crypto has no bcrypt.
 *
 * Blowfish's initial P-array and S-boxes are the hexadecimal digits of π's fractional part
 * (3.243F6A88…), so they are computed once with BigInt instead of being pasted in as a table.
 */

const P_WORDS = 18;
const S_WORDS = 4 * 256;
let initial: Uint32Array | undefined;

/** The first `words` 32-bit words of π's fractional part in hex (Machin's formula, fixed point). */
function piWords(words: number): Uint32Array {
  const guard = 64n;
  const bits = BigInt(words * 32) + guard;
  const one = 1n << bits;
  const arctanInverse = (x: bigint): bigint => {
    let sum = 0n;
    let term = one / x;
    let n = 1n;
    let positive = true;
    while (term !== 0n) {
      sum += positive ? term / n : -(term / n);
      term /= x * x;
      n += 2n;
      positive = !positive;
    }
    return sum;
  };
  const fraction = (16n * arctanInverse(5n) - 4n * arctanInverse(239n) - 3n * one) >> guard;
  const out = new Uint32Array(words);
  for (let i = 0; i < words; i++) out[i] = Number((fraction >> BigInt((words - 1 - i) * 32)) & 0xffffffffn);
  return out;
}

function initialState(): Uint32Array {
  initial ??= piWords(P_WORDS + S_WORDS);
  return initial;
}

/** Blowfish state: P (18 words) followed by the four S-boxes, in one array. */
class Blowfish {
  readonly s = new Uint32Array(initialState());
  private readonly lr = new Uint32Array(2);

  private f(x: number): number {
    const s = this.s;
    const a = s[P_WORDS + (x >>> 24)]!;
    const b = s[P_WORDS + 256 + ((x >>> 16) & 0xff)]!;
    const c = s[P_WORDS + 512 + ((x >>> 8) & 0xff)]!;
    const d = s[P_WORDS + 768 + (x & 0xff)]!;
    return (((a + b) ^ c) + d) >>> 0;
  }

  /** Encrypts the block in this.lr in place. */
  encrypt(): void {
    const p = this.s;
    let l = this.lr[0]!;
    let r = this.lr[1]!;
    for (let i = 0; i < 16; i += 2) {
      l ^= p[i]!;
      r ^= this.f(l);
      r ^= p[i + 1]!;
      l ^= this.f(r);
    }
    this.lr[0] = r ^ p[17]!;
    this.lr[1] = l ^ p[16]!;
  }

  /** Blowfish key schedule with bcrypt's salt mixing (`salt` may be absent: all zero). */
  expand(key: Uint8Array, salt?: Uint8Array): void {
    const s = this.s;
    let k = 0;
    for (let i = 0; i < P_WORDS; i++) {
      let w = 0;
      for (let j = 0; j < 4; j++, k = (k + 1) % key.length) w = (w << 8) | key[k]!;
      s[i] = (s[i]! ^ w) >>> 0;
    }
    this.lr[0] = 0;
    this.lr[1] = 0;
    let saltOffset = 0;
    const nextSalt = (): number => {
      if (!salt) return 0;
      let w = 0;
      for (let j = 0; j < 4; j++, saltOffset = (saltOffset + 1) % salt.length) w = (w << 8) | salt[saltOffset]!;
      return w >>> 0;
    };
    for (let i = 0; i < s.length; i += 2) {
      this.lr[0] = (this.lr[0]! ^ nextSalt()) >>> 0;
      this.lr[1] = (this.lr[1]! ^ nextSalt()) >>> 0;
      this.encrypt();
      s[i] = this.lr[0]!;
      s[i + 1] = this.lr[1]!;
    }
  }

  encryptBlock(l: number, r: number): [number, number] {
    this.lr[0] = l;
    this.lr[1] = r;
    this.encrypt();
    return [this.lr[0]!, this.lr[1]!];
  }
}

const ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const DECODE = new Map([...ALPHABET].map((c, i) => [c, i]));

/** bcrypt's own base64 (its alphabet, no padding). */
function encode64(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const b0 = bytes[i]!;
    const b1 = bytes[i + 1];
    const b2 = bytes[i + 2];
    out += ALPHABET[b0 >> 2]!;
    out += ALPHABET[((b0 & 3) << 4) | ((b1 ?? 0) >> 4)]!;
    if (b1 === undefined) break;
    out += ALPHABET[((b1 & 15) << 2) | ((b2 ?? 0) >> 6)]!;
    if (b2 === undefined) break;
    out += ALPHABET[b2 & 63]!;
  }
  return out;
}

function decode64(text: string, length: number): Uint8Array | undefined {
  const values: number[] = [];
  for (const c of text) {
    const v = DECODE.get(c);
    if (v === undefined) return undefined;
    values.push(v);
  }
  const out = new Uint8Array(length);
  let o = 0;
  for (let i = 0; i < values.length && o < length; i += 4) {
    const [c0, c1, c2 = 0, c3 = 0] = [values[i]!, values[i + 1] ?? 0, values[i + 2], values[i + 3]];
    out[o++] = (c0 << 2) | (c1 >> 4);
    if (o < length && i + 2 < values.length) out[o++] = ((c1 & 15) << 4) | (c2 >> 2);
    if (o < length && i + 3 < values.length) out[o++] = ((c2 & 3) << 6) | c3;
  }
  return o === length ? out : undefined;
}

const MAGIC = 'OrpheanBeholderScryDoubt';
const HASH_FORMAT = /^\$2([aby])\$(\d\d)\$([./A-Za-z0-9]{22})([./A-Za-z0-9]{31})$/;

/** Computes a bcrypt hash string for `password` with the cost and salt of `setting` ($2y$05$<22 chars>…). */
export function bcryptHash(password: string, setting: string): string {
  const m = HASH_FORMAT.exec(setting) ?? /^\$2([aby])\$(\d\d)\$([./A-Za-z0-9]{22})$/.exec(setting);
  if (!m) throw new Error('not a bcrypt setting');
  const [, minor, costText, saltText] = m;
  const cost = Number(costText);
  if (cost < 4 || cost > 31) throw new Error(`bcrypt cost ${cost} out of range`);
  const salt = decode64(saltText!, 16);
  if (!salt) throw new Error('bad bcrypt salt');
  // The key is the password's UTF-8 bytes and a NUL, cut at 72 bytes.
  const key = Buffer.concat([Buffer.from(password), Buffer.alloc(1)]).subarray(0, 72);

  const bf = new Blowfish();
  bf.expand(key, salt);
  for (let i = 2 ** cost; i > 0; i--) {
    bf.expand(key);
    bf.expand(salt);
  }
  const words = new Uint32Array(6);
  for (let i = 0; i < 6; i++) words[i] = Buffer.from(MAGIC, 'latin1').readUInt32BE(i * 4);
  for (let round = 0; round < 64; round++) {
    for (let i = 0; i < 6; i += 2) [words[i], words[i + 1]] = bf.encryptBlock(words[i]!, words[i + 1]!);
  }
  const out = Buffer.alloc(24);
  for (let i = 0; i < 6; i++) out.writeUInt32BE(words[i]!, i * 4);
  return `$2${minor}$${costText}$${saltText}${encode64(out.subarray(0, 23))}`;
}

export function isBcryptHash(hash: string): boolean {
  return HASH_FORMAT.test(hash);
}

/** True when `password` matches the bcrypt `hash`; constant time in the comparison. */
export function bcryptVerify(password: string, hash: string): boolean {
  if (!isBcryptHash(hash)) return false;
  const computed = Buffer.from(bcryptHash(password, hash));
  const expected = Buffer.from(hash);
  return computed.length === expected.length && timingSafeEqual(computed, expected);
}
