// Smoke checks run against the preview address: the new slot's instances, not the public route.
import http from "node:http";
import type { InstanceInfo } from "../runtime/contract.js";
import type { ServiceSpec, SmokeSpec } from "../spec/types.js";
import { runCommand } from "../util/command.js";
import { formatDuration } from "../util/duration.js";
import { StepFailure } from "./step.js";

export interface SmokeResult {
  name: string;
  ok: boolean;
  /** What the check saw: the HTTP status and body start, or the command's output. */
  output: string;
}

const MAX_OUTPUT_CHARS = 2_000;

/** Step 5 of the flow: every smoke check against every new instance; the first failure stops the step. */
export async function smokeInstances(svc: ServiceSpec, instances: InstanceInfo[], cwd: string): Promise<string> {
  if (svc.smoke.length === 0) return "no smoke checks defined";
  for (const check of svc.smoke) {
    for (const inst of instances) {
      const r = await runSmoke(check, inst, cwd);
      if (!r.ok) throw new StepFailure("smoke", `smoke check "${check.name}" failed against ${inst.host}:${inst.port}`, r.output);
    }
  }
  return `${svc.smoke.length} check(s) passed on ${instances.length} instance(s)`;
}

export async function runSmoke(check: SmokeSpec, target: { host: string; port: number }, cwd: string): Promise<SmokeResult> {
  return "http" in check ? runHttpSmoke(check, target) : runCommandSmoke(check, target, cwd);
}

function runHttpSmoke(check: Extract<SmokeSpec, { http: unknown }>, target: { host: string; port: number }): Promise<SmokeResult> {
  const { path, method, expectStatus, expectBody, headers } = check.http;
  return new Promise((resolve) => {
    const req = http.request({ host: target.host, port: target.port, path, method, headers, agent: false, timeout: check.timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => { if (body.length < MAX_OUTPUT_CHARS) body += c; });
      res.on("end", () => {
        const problems: string[] = [];
        if (res.statusCode !== expectStatus) problems.push(`expected status ${expectStatus}, got ${res.statusCode}`);
        if (expectBody !== undefined && !body.includes(expectBody)) problems.push(`body does not contain ${JSON.stringify(expectBody)}`);
        const seen = `${method} ${path} → ${res.statusCode} ${body.slice(0, 300)}`;
        resolve({ name: check.name, ok: problems.length === 0, output: problems.length ? `${problems.join("; ")} (${seen})` : seen });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${formatDuration(check.timeoutMs)}`)));
    req.on("error", (e) => resolve({ name: check.name, ok: false, output: `${method} ${path} failed: ${e.message}` }));
    req.end();
  });
}

async function runCommandSmoke(check: Extract<SmokeSpec, { command: string[] }>, target: { host: string; port: number }, cwd: string): Promise<SmokeResult> {
  const fill = (s: string) => s.replaceAll("{host}", target.host).replaceAll("{port}", String(target.port));
  const env = { PREVIEW_URL: `http://${target.host}:${target.port}`, PREVIEW_HOST: target.host, PREVIEW_PORT: String(target.port) };
  const r = await runCommand(check.command.map(fill), { cwd, env, timeoutMs: check.timeoutMs });
  return { name: check.name, ok: r.ok, output: r.output };
}
