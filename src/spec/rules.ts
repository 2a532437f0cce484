// Checks that need the whole normalized spec rather than one field. Each rule is small, has its own
// severity and its own test; the loader runs them all after the schema has passed.

import { constants as osConstants } from "node:os";
import { readFileSync } from "node:fs";
import { CertificateError, errorMessage } from "../errors.js";
import { readCertificateSync, splitPem } from "../proxy/certificates.js";
import { isCidr } from "../proxy/settings.js";
import { isAcmeHost, isCertificateHost, TlsPolicy } from "../proxy/tls-settings.js";
import { formatDuration } from "../util/duration.js";
import type { ServiceSpec, Spec, SpecProblem } from "./types.js";

/** A step into the YAML: a mapping key or a list index. */
export type PathSegment = string | number;

export type Severity = "error" | "warning";

export interface RuleContext {
  /** A problem located at the key of `path` in the file, or at its nearest ancestor when the key was left to its default. */
  at(path: PathSegment[], message: string): SpecProblem;
}

export interface SpecRule {
  name: string;
  severity: Severity;
  check(spec: Spec, ctx: RuleContext): SpecProblem[];
}

function services(spec: Spec): ServiceSpec[] {
  return Object.values(spec.services);
}

// "/api/" and "/api" match the same requests, so they claim the same route.
function routeKey(svc: ServiceSpec): string {
  const path = svc.route.pathPrefix.length > 1 ? svc.route.pathPrefix.replace(/\/+$/, "") : svc.route.pathPrefix;
  return `${svc.route.host ?? ""}${path}`;
}

function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export const duplicateRoute: SpecRule = {
  name: "duplicate-route",
  severity: "error",
  check(spec, ctx) {
    const owners = new Map<string, string>();
    const problems: SpecProblem[] = [];
    for (const svc of services(spec)) {
      const key = routeKey(svc);
      const owner = owners.get(key);
      if (owner === undefined) {
        owners.set(key, svc.name);
        continue;
      }
      problems.push(ctx.at(["services", svc.name, "route"], `services "${owner}" and "${svc.name}" both claim the route ${key}: the proxy could not tell which one a request is for`));
    }
    return problems;
  },
};

export const previewHost: SpecRule = {
  name: "preview-host",
  severity: "error",
  check(spec, ctx) {
    const hosts = new Map<string, string>();
    for (const svc of services(spec)) if (svc.route.host) hosts.set(svc.route.host, svc.name);
    const problems: SpecProblem[] = [];
    for (const svc of services(spec)) {
      const h = svc.route.previewHost;
      if (h === undefined) continue;
      const owner = hosts.get(h);
      if (owner !== undefined) problems.push(ctx.at(["services", svc.name, "route", "preview_host"], `${h} is ${owner === svc.name ? "this service's own route host" : `the route host of "${owner}"`}: a preview host must reach nothing else`));
      else hosts.set(h, svc.name);
    }
    return problems;
  },
};

export const canarySteps: SpecRule = {
  name: "canary-steps",
  severity: "error",
  check(spec, ctx) {
    const problems: SpecProblem[] = [];
    for (const svc of services(spec)) {
      if (!svc.canary) continue;
      const at = ["services", svc.name, "canary"];
      const problem = canaryStepsProblem(svc.canary.steps);
      if (problem) problems.push(ctx.at([...at, "steps"], problem));
      if (spec.proxy.driver !== "builtin") problems.push(ctx.at(at, `a canary needs the built-in proxy's per-slot counters; proxy.driver is ${spec.proxy.driver}`));
    }
    return problems;
  },
};

/** Steps below 100 must increase: a step that lowers the share would move users back and forth. */
export function canaryStepsProblem(steps: readonly number[]): string | undefined {
  for (let i = 1; i < steps.length; i++) if (steps[i]! <= steps[i - 1]!) return `steps must increase: ${steps[i - 1]} then ${steps[i]}`;
  return undefined;
}

export const sameListen: SpecRule = {
  name: "same-listen",
  severity: "error",
  check(spec, ctx) {
    const { agent, proxy } = spec;
    if (agent.port !== proxy.port) return [];
    // A wildcard address takes the port on every interface, loopback included.
    if (agent.host !== proxy.host && !isWildcard(agent.host) && !isWildcard(proxy.host)) return [];
    return [ctx.at(["proxy", "listen"], `the agent and the proxy both listen on port ${proxy.port}: give them different ports`)];
  },
};

/** Whether two listen addresses take the same port on some interface. */
function clash(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  return a.port === b.port && (a.host === b.host || isWildcard(a.host) || isWildcard(b.host));
}

type Listen = { host: string; port: number };

/** A listener of its own (`key`.listen) that shares a port with one of `others`, each named. */
function sharedPort(ctx: RuleContext, key: string, what: string, own: Listen | undefined, others: Array<[string, Listen | undefined]>): SpecProblem[] {
  if (!own) return [];
  return others
    .filter(([, other]) => other && clash(own, other))
    .map(([name]) => ctx.at([key, "listen"], `the ${what} and the ${name} both listen on port ${own.port}: give the ${what} a port of its own`));
}

export const consulListen: SpecRule = {
  name: "consul-listen",
  severity: "error",
  check: (spec, ctx) => sharedPort(ctx, "consul", "Consul API", spec.consul, [["agent", spec.agent], ["proxy", spec.proxy]]),
};

export const agentOnLoopback: SpecRule = {
  name: "agent-on-loopback",
  severity: "warning",
  check(spec, ctx) {
    if (isLoopback(spec.agent.host)) return [];
    return [ctx.at(["agent", "listen"], `the agent API listens on ${spec.agent.host}, which is not loopback: keep it on 127.0.0.1 and reach it over SSH when you need it remotely`)];
  },
};

export const healthTimeoutOverInterval: SpecRule = {
  name: "health-timeout-over-interval",
  severity: "warning",
  check(spec, ctx) {
    return services(spec)
      .filter((svc) => svc.health.timeoutMs > svc.health.intervalMs)
      .map((svc) =>
        ctx.at(["services", svc.name, "health", "timeout"], `health timeout (${formatDuration(svc.health.timeoutMs)}) is longer than the interval (${formatDuration(svc.health.intervalMs)}): a slow check would still be running when the next one starts`),
      );
  },
};

export const healthIntervalOverDeployTimeout: SpecRule = {
  name: "health-interval-over-deploy-timeout",
  severity: "warning",
  check(spec, ctx) {
    return services(spec)
      .filter((svc) => svc.health.intervalMs > svc.deployTimeoutMs)
      .map((svc) =>
        ctx.at(["services", svc.name, "health", "interval"], `health interval (${formatDuration(svc.health.intervalMs)}) is longer than deploy_timeout (${formatDuration(svc.deployTimeoutMs)}): once live, a failing instance would go unnoticed for longer than a whole deploy may take (deploys themselves probe new instances every 25ms)`),
      );
  },
};

export const cwdWithoutRelease: SpecRule = {
  name: "cwd-without-release",
  severity: "warning",
  check(spec, ctx) {
    return services(spec)
      .filter((svc) => svc.runtime === "process" && !svc.cwd.includes("{release}"))
      .map((svc) => ctx.at(["services", svc.name, "cwd"], `cwd has no {release}: every release would run from the same directory, so blue and green would run the same code`));
  },
};

/** The schema requires what each runtime needs; this catches what it cannot say. */
export const runtimeNeeds: SpecRule = {
  name: "runtime-needs",
  severity: "error",
  check(spec, ctx) {
    const problems: SpecProblem[] = [];
    for (const svc of services(spec)) {
      if (svc.runtime === "process" && svc.image !== undefined) problems.push(ctx.at(["services", svc.name, "image"], "image is for runtime: docker; this service runs as a process"));
      if (svc.runtime !== "process" && !svc.image!.includes("{release}")) problems.push(ctx.at(["services", svc.name, "image"], 'image must contain {release}, so each release runs its own image: "books:{release}"'));
      if (svc.runtime === "swarm" && spec.swarm === undefined) problems.push(ctx.at(["services", svc.name, "runtime"], "runtime: swarm needs the top-level swarm block: swarm: { manager: /var/run/docker.sock }"));
      if (svc.runtime !== "swarm" && (svc.placement !== undefined || svc.resources !== undefined)) problems.push(ctx.at(["services", svc.name, svc.placement !== undefined ? "placement" : "resources"], `placement and resources are for runtime: swarm; this service runs on ${svc.runtime}`));
      if (svc.runtime === "process" && svc.volumes !== undefined) problems.push(ctx.at(["services", svc.name, "volumes"], "volumes are for runtime: docker and swarm; a process sees the host's files already"));
    }
    return problems;
  },
};

/** A signal hook must name a service this spec runs, and a signal this platform knows. */
export const hookTargets: SpecRule = {
  name: "hook-targets",
  severity: "error",
  check(spec, ctx) {
    return services(spec).flatMap((svc) =>
      svc.hooks.afterFlip.flatMap((h, i) => {
        if (!("signal" in h)) return [];
        const out: SpecProblem[] = [];
        if (!spec.services[h.signal.service]) out.push(ctx.at(["services", svc.name, "hooks", "after_flip", i, "signal", "service"], `no service named "${h.signal.service}" in this spec`));
        if (!(h.signal.signal in osConstants.signals)) out.push(ctx.at(["services", svc.name, "hooks", "after_flip", i, "signal", "signal"], `unknown signal ${h.signal.signal}`));
        return out;
      }),
    );
  },
};

/** Each watch type needs the thing it looks at, and a service it names must exist. */
export const watchTargets: SpecRule = {
  name: "watch-targets",
  severity: "error",
  check(spec, ctx) {
    return spec.watches.flatMap((w, i) => {
      const at = (key: string, message: string) => ctx.at(["watches", i, key], message);
      const out: SpecProblem[] = [];
      if (w.type === "service" && !w.service) out.push(at("type", "a service watch needs service: the service to watch"));
      if (w.service && !spec.services[w.service]) out.push(at("service", `no service named "${w.service}" in this spec`));
      if (w.type === "key" && !w.key) out.push(at("type", "a key watch needs key: the KV key to watch"));
      if (w.type === "keyprefix" && w.prefix === undefined) out.push(at("type", "a keyprefix watch needs prefix: the KV prefix to watch"));
      if (w.state && w.type !== "checks") out.push(at("state", "state filters checks: it goes with type: checks"));
      return out;
    });
  },
};

export const trustedProxies: SpecRule = {
  name: "trusted-proxies",
  severity: "error",
  check(spec, ctx) {
    return spec.proxy.settings.trustedProxies.flatMap((cidr, i) =>
      isCidr(cidr) ? [] : [ctx.at(["proxy", "trusted_proxies", i], `"${cidr}" is not an IP address or CIDR block (like 198.18.0.0/15 or ::1)`)],
    );
  },
};

// A body wait shorter than the head wait it follows is almost always a slip of the unit.
export const upstreamTimeouts: SpecRule = {
  name: "upstream-connect-over-response",
  severity: "warning",
  check(spec, ctx) {
    const t = spec.proxy.settings.timeouts;
    if (t.upstreamConnectMs <= t.upstreamResponseMs) return [];
    return [ctx.at(["proxy", "timeouts", "upstream_connect"], "upstream_connect is longer than upstream_response: a slow connect ends in 504 before it could be retried on another instance")];
  },
};

/** A certificate this close to its end gets a warning at every validate and start. */
export const CERT_EXPIRY_WARNING_MS = 14 * 86_400_000;

// Every way a certificate file can fail to serve, said before the proxy meets it.
export const tlsCertificateFiles: SpecRule = {
  name: "tls-certificate-files",
  severity: "error",
  check(spec, ctx) {
    return (spec.proxy.settings.tls?.certificates ?? []).flatMap((c, i) => {
      try {
        readCertificateSync(c.certFile, c.keyFile, c.hosts);
        return [];
      } catch (e) {
        const key = e instanceof CertificateError && e.part === "key" ? "key_file" : "cert_file";
        return [ctx.at(["proxy", "tls", "certificates", i, key], errorMessage(e))];
      }
    });
  },
};

export const tlsCertificateExpiry: SpecRule = {
  name: "tls-certificate-expiry",
  severity: "warning",
  check(spec, ctx) {
    return (spec.proxy.settings.tls?.certificates ?? []).flatMap((c, i) => {
      let notAfter: number;
      try {
        notAfter = readCertificateSync(c.certFile, c.keyFile, c.hosts).notAfter;
      } catch {
        return []; // tls-certificate-files says why
      }
      const left = notAfter - Date.now();
      if (left > CERT_EXPIRY_WARNING_MS) return [];
      const when = new Date(notAfter).toISOString();
      const what = left <= 0 ? `expired on ${when}: clients refuse it` : `expires on ${when}`;
      return [ctx.at(["proxy", "tls", "certificates", i, "cert_file"], `the certificate for ${c.hosts.join(", ")} ${what}; replace the file (the proxy reloads it) or let acme get one`)];
    });
  },
};

export const tlsHostTwice: SpecRule = {
  name: "tls-host-twice",
  severity: "error",
  check(spec, ctx) {
    const first = new Map<string, number>();
    const problems: SpecProblem[] = [];
    (spec.proxy.settings.tls?.certificates ?? []).forEach((c, i) => {
      c.hosts.forEach((h, j) => {
        const owner = first.get(h);
        if (owner === undefined) first.set(h, i);
        else problems.push(ctx.at(["proxy", "tls", "certificates", i, "hosts", j], `${h} is served by certificates[${owner}] already: a host has one certificate`));
      });
    });
    return problems;
  },
};

// The schema takes any host name; SNI and ACME take fewer.
export const tlsHosts: SpecRule = {
  name: "tls-hosts",
  severity: "error",
  check(spec, ctx) {
    const tls = spec.proxy.settings.tls;
    const problems: SpecProblem[] = [];
    (tls?.certificates ?? []).forEach((c, i) =>
      c.hosts.forEach((h, j) => {
        if (!isCertificateHost(h)) problems.push(ctx.at(["proxy", "tls", "certificates", i, "hosts", j], `${h}: a client sends no SNI for an IP address, so no certificate can be picked for it; use a host name`));
      }),
    );
    (tls?.acme?.hosts ?? []).forEach((h, j) => {
      if (!isAcmeHost(h)) problems.push(ctx.at(["proxy", "tls", "acme", "hosts", j], `${h}: a CA issues over HTTP-01 only for a public DNS name (with a dot, no IP address, nothing under .localhost)`));
    });
    return problems;
  },
};

export const tlsBuiltinOnly: SpecRule = {
  name: "tls-builtin-only",
  severity: "error",
  check(spec, ctx) {
    if (!spec.proxy.tls || spec.proxy.driver === "builtin") return [];
    return [ctx.at(["proxy", "tls"], `proxy.tls is the built-in proxy's; with driver: ${spec.proxy.driver}, terminate TLS in your nginx template (docs/nginx.md)`)];
  },
};

export const tlsListen: SpecRule = {
  name: "tls-listen",
  severity: "error",
  check(spec, ctx) {
    const t = spec.proxy.tls;
    if (!t) return [];
    const others: Array<[string, Listen | undefined]> = [["plain listener (proxy.listen)", spec.proxy], ["agent", spec.agent], ["Consul API", spec.consul], ["metrics endpoint", spec.metrics]];
    return others
      .filter(([, other]) => other && clash(t, other))
      .map(([name]) => ctx.at(["proxy", "tls", "listen"], `the TLS listener and the ${name} both listen on port ${t.port}: give TLS a port of its own (443 in production)`));
  },
};

export const acmeCaFile: SpecRule = {
  name: "acme-ca-file",
  severity: "error",
  check(spec, ctx) {
    const file = spec.proxy.settings.tls?.acme?.caFile;
    if (file === undefined) return [];
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      return [ctx.at(["proxy", "tls", "acme", "ca_file"], `${file}: cannot be read: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`)];
    }
    if (splitPem(text).certificates.length === 0) return [ctx.at(["proxy", "tls", "acme", "ca_file"], `${file}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)`)];
    return [];
  },
};

export const metricsListen: SpecRule = {
  name: "metrics-listen",
  severity: "error",
  check: (spec, ctx) => sharedPort(ctx, "metrics", "metrics endpoint", spec.metrics, [["agent", spec.agent], ["proxy", spec.proxy], ["Consul API", spec.consul]]),
};

// Metrics name every service and release: open to a network, they need a token.
export const metricsOpen: SpecRule = {
  name: "metrics-open",
  severity: "warning",
  check(spec, ctx) {
    const m = spec.metrics;
    if (!m || m.tokenFile !== undefined || isLoopback(m.host)) return [];
    return [ctx.at(["metrics", "listen"], `the metrics endpoint listens on ${m.host}, which is not loopback, and asks for no token: set metrics.token_file, or anyone who reaches it reads your services, releases and traffic`)];
    },
  };

/** etcd's client speaks TLS to all members or to none, and client certificates need https. */
export const etcdEndpoints: SpecRule = {
  name: "etcd-endpoints",
  severity: "error",
  check(spec, ctx) {
    const etcd = spec.state.etcd;
    if (!etcd) return [];
    const secure = etcd.endpoints.filter((e) => e.startsWith("https://")).length;
    if (secure > 0 && secure < etcd.endpoints.length) {
      return [ctx.at(["state", "etcd", "endpoints"], "mixes http:// and https:// endpoints: the etcd client talks TLS to every member or to none")];
    }
    if (etcd.tls && secure === 0) return [ctx.at(["state", "etcd", "tls"], "tls is set but the endpoints are http://: write them as https://")];
    return [];
  },
};

/** etcd refuses leases shorter than its minimum (about 2 s); a long one leaves the cluster leaderless that long after a crash. */
export const MIN_LEADER_TTL_MS = 2_000;
export const MAX_LEADER_TTL_MS = 60_000;
export const etcdLeaderTtl: SpecRule = {
  name: "etcd-leader-ttl",
  severity: "error",
  check(spec, ctx) {
    const ttl = spec.state.etcd?.leaderTtlMs;
    if (ttl === undefined || (ttl >= MIN_LEADER_TTL_MS && ttl <= MAX_LEADER_TTL_MS)) return [];
    return [ctx.at(["state", "etcd", "leader_ttl"], `leader_ttl must be between 2s (etcd's shortest lease) and 60s (the cluster has no leader that long after a crash), got ${ttl}ms`)];
  },
};

// ACME with nothing to get a certificate for is a spec that forgot its route hosts.
export const acmeWithoutHosts: SpecRule = {
  name: "acme-without-hosts",
  severity: "warning",
  check(spec, ctx) {
    const tls = spec.proxy.settings.tls;
    if (!tls?.acme) return [];
    const routes = services(spec).map((svc) => ({ service: svc.name, pathPrefix: svc.route.pathPrefix, poolId: svc.name, upstreams: [], ...(svc.route.host ? { host: svc.route.host } : {}) }));
    if (new TlsPolicy(tls, routes).acmeHosts.size !== 0) return [];
    return [ctx.at(["proxy", "tls", "acme"], "no host gets a certificate over ACME: every service's route host is served by a certificates entry, or is no DNS name with a dot; set acme.hosts, or a route host")];
  },
};

export const etcdUnused: SpecRule = {
  name: "etcd-unused",
  severity: "warning",
  check(spec, ctx) {
    if (!spec.state.etcd || spec.state.driver === "etcd") return [];
    return [ctx.at(["state", "etcd"], `state.etcd is set, but state.driver is ${spec.state.driver}: the etcd cluster is not used`)];
  },
};

export const SPEC_RULES: readonly SpecRule[] = [
  tlsCertificateFiles,
  tlsCertificateExpiry,
  tlsHostTwice,
  tlsHosts,
  tlsBuiltinOnly,
  tlsListen,
  acmeCaFile,
  acmeWithoutHosts,
  etcdEndpoints,
  etcdLeaderTtl,
  etcdUnused,
  trustedProxies,
  upstreamTimeouts,
  watchTargets,
  hookTargets,
  runtimeNeeds,
  duplicateRoute,
  previewHost,
  canarySteps,
  sameListen,
  consulListen,
  agentOnLoopback,
  healthTimeoutOverInterval,
  healthIntervalOverDeployTimeout,
  cwdWithoutRelease,
  metricsListen,
  metricsOpen,
];

/**
 * The rules that read files the spec names, whose content changes under a running proxy (a
 * renewal gone wrong): commands that only ask the running proxy about them run without these,
 * so that a broken certificate file does not keep an operator from seeing what the proxy serves.
 */
export const FILE_CONTENT_RULES: readonly SpecRule[] = [tlsCertificateFiles, tlsCertificateExpiry, acmeCaFile];

export function runRules(spec: Spec, ctx: RuleContext, rules: readonly SpecRule[] = SPEC_RULES): { errors: SpecProblem[]; warnings: SpecProblem[] } {
  const errors: SpecProblem[] = [];
  const warnings: SpecProblem[] = [];
  for (const rule of rules) {
    const found = rule.check(spec, ctx);
    (rule.severity === "error" ? errors : warnings).push(...found);
  }
  return { errors, warnings };
}
