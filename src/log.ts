/** Where warnings go. The CLI prints them to stderr; library users may redirect or silence them. */
export type WarningSink = (message: string) => void;

let sink: WarningSink = (m) => process.stderr.write(`ferry: warning: ${m}\n`);

export function setWarningSink(s: WarningSink): void {
  sink = s;
}

export function warn(message: string): void {
  sink(message);
}
