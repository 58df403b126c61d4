/** Awaits a promise that must reject; returns the error for assertions on its code and message. */
export async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string; hint?: string; name?: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected a failure');
}
