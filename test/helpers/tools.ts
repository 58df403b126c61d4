import { execFileSync } from 'node:child_process';

/**
 * Whether an external peer (skopeo, umoci, docker-registry) is installed. Missing locally: the
 * test is skipped and says so loudly. Missing under CI=true: a failure, never a silent skip.
 */
export function hasTool(name: string): boolean {
  let found = false;
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    found = true;
  } catch {
    found = false;
  }
  if (!found) {
    const msg = `${name} is not installed: tests that need it are SKIPPED (install it with: apt-get install -y ${debianPackage(name)})`;
    if (process.env.CI === 'true') throw new Error(`CI=true but ${msg.replace('SKIPPED', 'required')}`);
    process.stderr.write(`\n*** ${msg} ***\n\n`);
  }
  return found;
}

function debianPackage(tool: string): string {
  return tool === 'script' ? 'bsdutils' : tool;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}
