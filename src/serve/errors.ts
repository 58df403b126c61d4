/** Error codes of the OCI distribution spec (plus distribution's UNKNOWN, UNAVAILABLE, TAG_INVALID). */
export type RegistryCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'TAG_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'UNAVAILABLE'
  | 'RANGE_INVALID'
  | 'UNKNOWN';

/** An error answered to the client as `{"errors":[{code,message,detail}]}` with an HTTP status. */
export class RegistryError extends Error {
  constructor(
    readonly status: number,
    readonly code: RegistryCode,
    message: string,
    readonly detail?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'RegistryError';
  }

  body(): string {
    const entry: Record<string, unknown> = { code: this.code, message: this.message };
    if (this.detail !== undefined) entry.detail = this.detail;
    return JSON.stringify({ errors: [entry] });
  }
}

export const nameInvalid = (name: string, why: string) => new RegistryError(400, 'NAME_INVALID', `invalid repository name ${JSON.stringify(name)}: ${why}`, { name });
export const nameUnknown = (name: string) => new RegistryError(404, 'NAME_UNKNOWN', `repository ${JSON.stringify(name)} not known to the registry`, { name });
export const manifestUnknown = (name: string, ref: string, why = '') =>
  new RegistryError(404, 'MANIFEST_UNKNOWN', `manifest ${ref} unknown in repository ${JSON.stringify(name)}${why ? `: ${why}` : ''}`, { name, reference: ref });
export const blobUnknown = (digest: string) => new RegistryError(404, 'BLOB_UNKNOWN', `blob ${digest} unknown to the registry`, { digest });
export const uploadUnknown = (id: string) => new RegistryError(404, 'BLOB_UPLOAD_UNKNOWN', `upload ${JSON.stringify(id)} unknown (finished, cancelled or expired)`, { uuid: id });
export const digestInvalid = (message: string, detail?: unknown) => new RegistryError(400, 'DIGEST_INVALID', message, detail);
export const unsupported = (message: string, status = 405) => new RegistryError(status, 'UNSUPPORTED', message);
