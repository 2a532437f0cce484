// Step 8 of the flow: one request through the proxy's public address, on the new route, must not
// fail. It is the first request a client would send.
import http from "node:http";
import { formatDuration } from "../util/duration.js";
import type { ServiceSpec, Spec } from "../spec/types.js";
import { StepFailure } from "./step.js";

export async function verifyPublicRoute(spec: Spec, svc: ServiceSpec): Promise<string> {
  const { host, port } = spec.proxy;
  const prefix = svc.route.pathPrefix;
  const healthPath = svc.health.http;
  const path = healthPath && (prefix === "/" || healthPath.startsWith(prefix)) ? healthPath : prefix;
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.get({ host: host === "0.0.0.0" ? "127.0.0.1" : host, port, path, agent: false, headers: { host: svc.route.host ?? "localhost", "user-agent": "turquoise-verify" }, timeout: svc.health.timeoutMs }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${formatDuration(svc.health.timeoutMs)}`)));
    req.on("error", reject);
  }).catch((e: Error) => {
    throw new StepFailure("verify", `request through the public route failed: ${e.message}`);
  });
  if (status >= 500) throw new StepFailure("verify", `GET ${path} through the public route answered ${status}`);
  return `GET ${path} through the proxy → ${status}`;
}
