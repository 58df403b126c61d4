import { describe, it, expect } from 'vitest';
import {
  parseReference,
  tryParseReference,
  formatReference,
  familiarName,
  repositoryName,
  apiHost,
  isValidTag,
  isValidRepositoryPath,
  parseRepository,
} from '../src/oci/reference.js';

const SHA = 'sha256:' + 'a'.repeat(64);
const SHA512 = 'sha512:' + '0123456789abcdef'.repeat(8);

interface Valid {
  input: string;
  domain: string;
  path: string;
  tag?: string;
  digest?: string;
  full: string;
  familiar: string;
}

const valid: Valid[] = [
  { input: 'ubuntu', domain: 'docker.io', path: 'library/ubuntu', tag: 'latest', full: 'docker.io/library/ubuntu:latest', familiar: 'ubuntu:latest' },
  { input: 'alpine:3.19', domain: 'docker.io', path: 'library/alpine', tag: '3.19', full: 'docker.io/library/alpine:3.19', familiar: 'alpine:3.19' },
  { input: 'docker.io/ubuntu', domain: 'docker.io', path: 'library/ubuntu', tag: 'latest', full: 'docker.io/library/ubuntu:latest', familiar: 'ubuntu:latest' },
  { input: 'docker.io/library/ubuntu:22.04', domain: 'docker.io', path: 'library/ubuntu', tag: '22.04', full: 'docker.io/library/ubuntu:22.04', familiar: 'ubuntu:22.04' },
  { input: 'library/ubuntu', domain: 'docker.io', path: 'library/ubuntu', tag: 'latest', full: 'docker.io/library/ubuntu:latest', familiar: 'ubuntu:latest' },
  { input: 'index.docker.io/ubuntu', domain: 'docker.io', path: 'library/ubuntu', tag: 'latest', full: 'docker.io/library/ubuntu:latest', familiar: 'ubuntu:latest' },
  { input: 'index.docker.io/user/app:1', domain: 'docker.io', path: 'user/app', tag: '1', full: 'docker.io/user/app:1', familiar: 'user/app:1' },
  { input: 'user/app:1', domain: 'docker.io', path: 'user/app', tag: '1', full: 'docker.io/user/app:1', familiar: 'user/app:1' },
  { input: 'user/app', domain: 'docker.io', path: 'user/app', tag: 'latest', full: 'docker.io/user/app:latest', familiar: 'user/app:latest' },
  // 'library/' is stripped only at a single level.
  { input: 'library/a/b', domain: 'docker.io', path: 'library/a/b', tag: 'latest', full: 'docker.io/library/a/b:latest', familiar: 'library/a/b:latest' },
  { input: 'ghcr.io/o/r', domain: 'ghcr.io', path: 'o/r', tag: 'latest', full: 'ghcr.io/o/r:latest', familiar: 'ghcr.io/o/r:latest' },
  { input: 'ghcr.io/o/r/sub:v1.2.3', domain: 'ghcr.io', path: 'o/r/sub', tag: 'v1.2.3', full: 'ghcr.io/o/r/sub:v1.2.3', familiar: 'ghcr.io/o/r/sub:v1.2.3' },
  // No 'library/' outside docker.io.
  { input: 'ghcr.io/single', domain: 'ghcr.io', path: 'single', tag: 'latest', full: 'ghcr.io/single:latest', familiar: 'ghcr.io/single:latest' },
  { input: 'localhost/foo', domain: 'localhost', path: 'foo', tag: 'latest', full: 'localhost/foo:latest', familiar: 'localhost/foo:latest' },
  { input: 'localhost:5000/x', domain: 'localhost:5000', path: 'x', tag: 'latest', full: 'localhost:5000/x:latest', familiar: 'localhost:5000/x:latest' },
  // Docker reads this as the official image 'localhost' with tag '5000'.
  { input: 'localhost:5000', domain: 'docker.io', path: 'library/localhost', tag: '5000', full: 'docker.io/library/localhost:5000', familiar: 'localhost:5000' },
  { input: '127.0.0.1:5000/x:tag', domain: '127.0.0.1:5000', path: 'x', tag: 'tag', full: '127.0.0.1:5000/x:tag', familiar: '127.0.0.1:5000/x:tag' },
  { input: '[::1]:5000/x', domain: '[::1]:5000', path: 'x', tag: 'latest', full: '[::1]:5000/x:latest', familiar: '[::1]:5000/x:latest' },
  { input: '[::1]:5000/foo:bar', domain: '[::1]:5000', path: 'foo', tag: 'bar', full: '[::1]:5000/foo:bar', familiar: '[::1]:5000/foo:bar' },
  { input: `alpine@${SHA}`, domain: 'docker.io', path: 'library/alpine', digest: SHA, full: `docker.io/library/alpine@${SHA}`, familiar: `alpine@${SHA}` },
  { input: `ghcr.io/o/r@${SHA}`, domain: 'ghcr.io', path: 'o/r', digest: SHA, full: `ghcr.io/o/r@${SHA}`, familiar: `ghcr.io/o/r@${SHA}` },
  { input: `ghcr.io/o/r@${SHA512}`, domain: 'ghcr.io', path: 'o/r', digest: SHA512, full: `ghcr.io/o/r@${SHA512}`, familiar: `ghcr.io/o/r@${SHA512}` },
  { input: `alpine:3.19@${SHA}`, domain: 'docker.io', path: 'library/alpine', tag: '3.19', digest: SHA, full: `docker.io/library/alpine:3.19@${SHA}`, familiar: `alpine:3.19@${SHA}` },
  { input: `localhost:5000/x:t@${SHA}`, domain: 'localhost:5000', path: 'x', tag: 't', digest: SHA, full: `localhost:5000/x:t@${SHA}`, familiar: `localhost:5000/x:t@${SHA}` },
  // An uppercase first component is a domain, and the host is lowercased.
  { input: 'Foo.com/x', domain: 'foo.com', path: 'x', tag: 'latest', full: 'foo.com/x:latest', familiar: 'foo.com/x:latest' },
  { input: 'LOCALHOST:5000/x', domain: 'localhost:5000', path: 'x', tag: 'latest', full: 'localhost:5000/x:latest', familiar: 'localhost:5000/x:latest' },
  { input: 'Index.Docker.IO/x', domain: 'docker.io', path: 'library/x', tag: 'latest', full: 'docker.io/library/x:latest', familiar: 'x:latest' },
  // A dotless host that is a domain only because of its case keeps it: 'foo/x' would be a Docker Hub path.
  { input: 'Foo/x', domain: 'Foo', path: 'x', tag: 'latest', full: 'Foo/x:latest', familiar: 'Foo/x:latest' },
  { input: 'my-registry.example.com:443/team/app:Release_1', domain: 'my-registry.example.com:443', path: 'team/app', tag: 'Release_1', full: 'my-registry.example.com:443/team/app:Release_1', familiar: 'my-registry.example.com:443/team/app:Release_1' },
  { input: 'a__b', domain: 'docker.io', path: 'library/a__b', tag: 'latest', full: 'docker.io/library/a__b:latest', familiar: 'a__b:latest' },
  { input: 'a--b/c_d', domain: 'docker.io', path: 'a--b/c_d', tag: 'latest', full: 'docker.io/a--b/c_d:latest', familiar: 'a--b/c_d:latest' },
  { input: 'a.b', domain: 'docker.io', path: 'library/a.b', tag: 'latest', full: 'docker.io/library/a.b:latest', familiar: 'a.b:latest' },
  { input: 'example.com/' + 'a'.repeat(243), domain: 'example.com', path: 'a'.repeat(243), tag: 'latest', full: `example.com/${'a'.repeat(243)}:latest`, familiar: `example.com/${'a'.repeat(243)}:latest` },
  { input: `x:${'t'.repeat(128)}`, domain: 'docker.io', path: 'library/x', tag: 't'.repeat(128), full: `docker.io/library/x:${'t'.repeat(128)}`, familiar: `x:${'t'.repeat(128)}` },
  { input: 'x:_under', domain: 'docker.io', path: 'library/x', tag: '_under', full: 'docker.io/library/x:_under', familiar: 'x:_under' },
];

interface Invalid {
  input: string;
  /** A fragment the message must contain. */
  says?: string | RegExp;
}

const invalid: Invalid[] = [
  { input: '', says: 'empty' },
  { input: ' ', says: 'whitespace' },
  { input: 'ubuntu latest', says: 'whitespace' },
  { input: 'ubuntu\n', says: 'whitespace' },
  { input: 'a'.repeat(64), says: 'image ID' },
  { input: 'Ubuntu', says: 'must be lowercase' },
  { input: 'docker.io/Ubuntu', says: 'must be lowercase' },
  { input: 'ghcr.io/Org/repo', says: 'must be lowercase' },
  { input: 'user/App:1', says: 'must be lowercase' },
  { input: 'example.com/' + 'a'.repeat(244), says: '255' },
  // The limit counts the normalised name: 'docker.io/library/' is 18 characters.
  { input: 'a'.repeat(238), says: '255' },
  { input: `x:${'t'.repeat(129)}`, says: '128' },
  { input: 'x:.tag', says: 'invalid tag' },
  { input: 'x:-tag', says: 'invalid tag' },
  { input: 'x:', says: 'invalid tag' },
  { input: 'x:a/b' },
  { input: `x@sha256:${'A'.repeat(64)}`, says: 'lowercase hex' },
  { input: `x@sha256:${'a'.repeat(63)}`, says: '64' },
  { input: `x@md5:${'a'.repeat(32)}`, says: 'unsupported algorithm' },
  { input: 'x@', says: 'invalid digest' },
  { input: `x@${SHA}:tag`, says: 'invalid digest' },
  { input: `x@${SHA}@${SHA}`, says: 'invalid digest' },
  { input: 'a___b', says: 'a___b' },
  { input: 'a-.b', says: 'a-.b' },
  { input: 'a..b' },
  { input: '-ab' },
  { input: 'ab-' },
  { input: '_ab' },
  { input: 'ab.' },
  { input: 'foo/', says: 'empty component' },
  { input: 'foo//bar', says: 'empty component' },
  { input: '/foo', says: 'empty component' },
  { input: 'ghcr.io/', says: 'missing' },
  { input: 'docker.io/', says: 'missing' },
  { input: ':tag', says: 'missing' },
  { input: `@${SHA}`, says: 'missing' },
  { input: 'bad_host.com/x', says: 'domain' },
  { input: '-bad.com/x', says: 'domain' },
  { input: 'host.com:port/x', says: 'domain' },
  { input: '[zz::1]:5000/x', says: 'domain' },
  // The grammar takes them; no URL does (they were an internal "Invalid URL" with a stack).
  { input: '999.999.999.999/x', says: 'not a host a URL can name' },
  { input: '10.0.0.256:5000/x', says: 'not a host a URL can name' },
  { input: 'localhost:99999/x', says: 'not a host a URL can name' },
  { input: '[::1]:5000' },
  { input: 'foo:bar:baz' },
  { input: 'a$b' },
];

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe('parseReference: valid references', () => {
  it.each(valid)('$input', (c) => {
    const r = parseReference(c.input);
    expect(r).toEqual({
      domain: c.domain,
      path: c.path,
      ...(c.tag !== undefined ? { tag: c.tag } : {}),
      ...(c.digest !== undefined ? { digest: c.digest } : {}),
    });
    expect(formatReference(r)).toBe(c.full);
    expect(familiarName(r)).toBe(c.familiar);
    expect(repositoryName(r)).toBe(`${c.domain}/${c.path}`);
    // The full form parses back to the same reference.
    expect(parseReference(formatReference(r))).toEqual(r);
    expect(tryParseReference(c.input)).toEqual(r);
  });
});

describe('parseReference: invalid references', () => {
  it.each(invalid)('$input', (c) => {
    expect(() => parseReference(c.input)).toThrow();
    const e = thrown(() => parseReference(c.input)) as { code?: string; message: string };
    expect(e.code).toBe('INVALID_REFERENCE');
    expect(e.message).toContain(JSON.stringify(c.input).slice(0, 40));
    if (typeof c.says === 'string') expect(e.message).toContain(c.says);
    else if (c.says) expect(e.message).toMatch(c.says);
    expect(tryParseReference(c.input)).toBeUndefined();
  });
});

describe('digest errors', () => {
  it('keeps the digest error as the cause', () => {
    const e = thrown(() => parseReference(`x@md5:${'a'.repeat(32)}`)) as Error & { code: string };
    expect(e.code).toBe('INVALID_REFERENCE');
    expect((e.cause as { code: string }).code).toBe('INVALID_DIGEST');
  });
});

describe('parseRepository (tags, sync sources)', () => {
  it('takes repositories, with or without a registry or docker://', () => {
    expect(repositoryName(parseRepository('alpine', 'x'))).toBe('docker.io/library/alpine');
    expect(repositoryName(parseRepository('ghcr.io/org/app', 'x'))).toBe('ghcr.io/org/app');
    expect(repositoryName(parseRepository('docker://localhost:5000/team/app', 'x'))).toBe('localhost:5000/team/app');
  });

  it('refuses a registry where a repository belongs, saying so', () => {
    for (const r of ['127.0.0.1:5000', 'localhost', 'localhost:5000', 'registry.example.com', 'myreg:5000', 'docker://reg.example:443']) {
      expect(() => parseRepository(r, 'x'), r).toThrow(/names a registry, not a repository/);
    }
  });

  it('refuses a tag or digest; short numeric tags stay tags (node:20 is not a registry)', () => {
    for (const r of ['alpine:3', 'node:20', 'python:3.12', 'my.image:1.0', 'ghcr.io/org/app:v1', `ghcr.io/org/app@sha256:${'a'.repeat(64)}`]) {
      expect(() => parseRepository(r, 'x'), r).toThrow(/must be a repository, without a tag or digest/);
    }
  });
});

describe('apiHost', () => {
  it.each([
    ['ubuntu', 'registry-1.docker.io'],
    ['index.docker.io/user/app', 'registry-1.docker.io'],
    ['ghcr.io/o/r', 'ghcr.io'],
    ['localhost:5000/x', 'localhost:5000'],
  ])('%s -> %s', (input, host) => {
    expect(apiHost(parseReference(input))).toBe(host);
  });
});

describe('isValidTag', () => {
  it.each([
    ['latest', true],
    ['v1.2.3-rc.1_x', true],
    ['_x', true],
    ['t'.repeat(128), true],
    ['t'.repeat(129), false],
    ['', false],
    ['.x', false],
    ['-x', false],
    ['a+b', false],
  ])('%s -> %s', (tag, ok) => {
    expect(isValidTag(tag)).toBe(ok);
  });
});

describe('isValidRepositoryPath', () => {
  it.each([
    ['library/ubuntu', true],
    ['a__b/c.d/e---f', true],
    ['a', true],
    ['', false],
    ['a/', false],
    ['a//b', false],
    ['A/b', false],
    ['a___b', false],
    ['a-.b', false],
    ['a_.b', false],
  ])('%s -> %s', (path, ok) => {
    expect(isValidRepositoryPath(path)).toBe(ok);
  });
});
