// The machine a benchmark ran on: every benchmark prints it beside its figures.

import { spawnSync } from "node:child_process";
import os from "node:os";

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  nginx?: string;
  wrk?: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  const info: MachineInfo = {
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    cores: os.availableParallelism?.() ?? cpus.length,
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
  };
  const nginx = versionOf("nginx", ["-v"], /nginx\/(\S+)/);
  if (nginx) info.nginx = nginx;
  const wrk = versionOf("wrk", ["-v"], /wrk (\S+)/);
  if (wrk) info.wrk = wrk;
  return info;
}

export function formatMachine(m: MachineInfo): string {
  const lines = [
    `cpu     ${m.cpuModel} (${m.cores} cores)`,
    `memory  ${m.memoryGiB} GiB`,
    `os      ${m.os}`,
    `node    ${m.node}`,
  ];
  if (m.nginx) lines.push(`nginx   ${m.nginx}`);
  if (m.wrk) lines.push(`wrk     ${m.wrk}`);
  return lines.join("\n");
}

/** Runs `command args` and pulls the version out of stdout+stderr; undefined when absent. */
function versionOf(command: string, args: string[], pattern: RegExp): string | undefined {
  const r = spawnSync(command, args, { encoding: "utf8" });
  if (r.error) return undefined;
  return pattern.exec(`${r.stdout}\n${r.stderr}`)?.[1];
}
