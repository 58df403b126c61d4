import { FerryError } from '../errors.js';
import { parseDigest, type Digest } from './digest.js';

/**
 * A repository named without tag or digest, for commands that take one (`tags`, `sync`). A bare
 * `HOST:PORT` or `registry.example.com` would otherwise be read as a Docker Hub image (docker
 * reads `localhost:5000` as image localhost, tag 5000): that is refused as naming a registry (a
 * name with a dot, localhost, or a 4-5 digit port; `node:20` stays an image with a tag).
 */
/** A registry name as people write it on the command line: `docker://` allowed, as in copy. */
export function withoutDockerPrefix(text: string): string {
  return text.replace(/^docker:\/\//, '');
}

/** True when the text (without `docker://`) gives a tag or a digest, not just a repository. */
export function namesTagOrDigest(text: string): boolean {
  return text.includes('@') || /:[\w][\w.-]*$/.test(text.split('/').pop() ?? '');
}

export function parseRepository(input: string, what: string): Reference {
  const bare = withoutDockerPrefix(input);
  if (!bare.includes('/') && /^(localhost|[^:@]*\.[^:@]*)(:\d+)?$|^[^:@]+:\d{4,5}$/.test(bare)) {
    throw new FerryError('USAGE', `${what} "${input}" names a registry, not a repository: write REGISTRY/REPOSITORY, e.g. ${bare}/team/app`, {
      hint: `ferry catalog ${bare} lists its repositories`,
    });
  }
  const r = parseReference(bare);
  if (namesTagOrDigest(bare)) {
    throw new FerryError('USAGE', `${what} "${input}" must be a repository, without a tag or digest`);
  }
  return r;
}

/**
 * An image reference, normalised the way docker does it: Docker Hub is always 'docker.io',
 * official images get 'library/', and 'latest' is filled in only when no tag or digest was given.
 */
export interface Reference {
  domain: string;
  path: string;
  tag?: string;
  digest?: Digest;
}

const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_LEGACY = 'index.docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const NAME_TOTAL_LENGTH_MAX = 255;

const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
// The domain-name form also covers IPv4 addresses.
const DOMAIN = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const IMAGE_ID = /^[a-f0-9]{64}$/;

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

export function isValidRepositoryPath(path: string): boolean {
  return path.split('/').every((c) => PATH_COMPONENT.test(c));
}

/** `http://host/x` and `oci:DIR` where a registry image is expected: say what to write instead. */
function schemeHint(first: string, input: string): string | undefined {
  if (/^https?:$/i.test(first)) return `a registry image is named without a scheme: ${input.replace(/^https?:\/\//i, '')}`;
  if (/^(oci|oci-archive|docker-archive):$/i.test(first)) return 'this names a layout or an archive; ferry copy reaches those';
  return undefined;
}

export function parseReference(input: string): Reference {
  const shown = JSON.stringify(input.length > 300 ? input.slice(0, 300) + '…' : input);
  const fail = (what: string, hint?: string, cause?: unknown): never => {
    throw new FerryError('INVALID_REFERENCE', `invalid reference ${shown}: ${what}`, { hint, cause });
  };

  if (input === '') fail('reference is empty');
  if (/\s/.test(input)) fail('reference contains whitespace');
  if (IMAGE_ID.test(input)) {
    fail('this is an image ID, not an image name', 'name the image as repository[:tag] or repository@sha256:<digest>');
  }

  let name = input;
  let digest: Digest | undefined;
  const at = name.indexOf('@');
  if (at !== -1) {
    try {
      digest = parseDigest(name.slice(at + 1));
    } catch (e) {
      fail(e instanceof Error ? e.message : String(e), undefined, e);
    }
    name = name.slice(0, at);
  }

  // A ':' after the last '/' starts a tag; one before it belongs to a port.
  let tag: string | undefined;
  const colon = name.lastIndexOf(':');
  if (colon > name.lastIndexOf('/')) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (tag.length > 128) fail(`tag is longer than 128 characters`);
    if (!isValidTag(tag)) {
      fail(`invalid tag ${JSON.stringify(tag)}: a tag is letters, digits, '_', '.' and '-', and cannot start with '.' or '-'`);
    }
  }

  let domain = DOCKER_HUB;
  let path = name;
  const slash = name.indexOf('/');
  if (slash !== -1) {
    const first = name.slice(0, slash);
    const lower = first.toLowerCase();
    const looksLikeDomain = lower === 'localhost' || /[.:]/.test(lower);
    if (looksLikeDomain || first !== lower) {
      if (!DOMAIN.test(first)) fail(`invalid registry domain ${JSON.stringify(first)}`, schemeHint(first, input));
      // The grammar allows what no URL holds (999.1.1.1 reads as an IPv4 address; port 99999).
      if (!URL.canParse(`https://${first}/`)) {
        fail(`invalid registry domain ${JSON.stringify(first)}: not a host a URL can name`, 'an IPv4 address is four numbers of at most 255, a port at most 65535');
      }
      // 'Foo' is a domain only because of its case; lowercased, 'foo/x' would read as a Docker Hub path.
      domain = looksLikeDomain ? lower : first;
      path = name.slice(slash + 1);
    }
  }
  if (domain === DOCKER_HUB_LEGACY) domain = DOCKER_HUB;

  if (path === '') fail('repository name is missing');
  for (const component of path.split('/')) {
    if (component === '') fail(`repository path has an empty component (a '//' or a leading or trailing '/')`);
    if (PATH_COMPONENT.test(component)) continue;
    if (PATH_COMPONENT.test(component.toLowerCase())) fail('repository names must be lowercase');
    fail(
      `invalid repository path component ${JSON.stringify(component)}: use lowercase letters and digits, ` +
        `separated by '.', '_', '__' or dashes, not at the start or end`,
    );
  }
  if (domain === DOCKER_HUB && !path.includes('/')) path = `library/${path}`;

  const nameLength = domain.length + 1 + path.length;
  if (nameLength > NAME_TOTAL_LENGTH_MAX) {
    fail(`repository name is ${nameLength} characters, more than the limit of ${NAME_TOTAL_LENGTH_MAX}`);
  }

  if (tag === undefined && digest === undefined) tag = 'latest';
  const ref: Reference = { domain, path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

export function tryParseReference(input: string): Reference | undefined {
  try {
    return parseReference(input);
  } catch (e) {
    if (e instanceof FerryError) return undefined;
    throw e;
  }
}

function withTagAndDigest(name: string, r: Reference): string {
  return name + (r.tag !== undefined ? `:${r.tag}` : '') + (r.digest !== undefined ? `@${r.digest}` : '');
}

export function repositoryName(r: Reference): string {
  return `${r.domain}/${r.path}`;
}

export function formatReference(r: Reference): string {
  return withTagAndDigest(repositoryName(r), r);
}

/** The short form docker shows: no 'docker.io/', and no 'library/' for official images. */
export function familiarName(r: Reference): string {
  let name = repositoryName(r);
  if (r.domain === DOCKER_HUB) {
    name = r.path;
    const rest = name.slice('library/'.length);
    if (name.startsWith('library/') && !rest.includes('/')) name = rest;
  }
  return withTagAndDigest(name, r);
}

export function apiHost(r: Reference): string {
  return r.domain === DOCKER_HUB ? DOCKER_HUB_API : r.domain;
}
