// Makes sure the external programs a benchmark drives (wrk, nginx) are installed, using Debian's
// packages, and prints when it installs something.

import { spawnSync } from "node:child_process";

export function commandExists(command: string): boolean {
  return spawnSync("sh", ["-c", 'command -v "$1"', "sh", command], { stdio: "ignore" }).status === 0;
}

/** Installs `debianPackage` with apt-get when `command` is not on the PATH. */
export function ensureCommand(command: string, debianPackage: string = command): void {
  if (commandExists(command)) return;
  process.stderr.write(`${command} is missing: installing the Debian package ${debianPackage} with apt-get\n`);
  const sudo = process.getuid?.() === 0 ? [] : ["sudo"];
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [["apt-get", "update"], ["apt-get", "install", "-y", debianPackage]]) {
    const argv = [...sudo, ...args];
    const r = spawnSync(argv[0]!, argv.slice(1), { stdio: ["ignore", "inherit", "inherit"], env });
    if (r.status !== 0) throw new Error(`${argv.join(" ")} failed (exit ${r.status ?? r.signal})`);
  }
  if (!commandExists(command)) throw new Error(`${debianPackage} is installed but ${command} is still not on the PATH`);
}
