// POST /v1/hooks/<service>: deploys from CI. GitHub signs its deliveries (X-Hub-Signature-256,
// HMAC-SHA256 over the raw body with a per-service secret); other CIs send a deploy token. The
// payload names the release through the service's `webhook.release` template, and a delivery
// seen before is answered, never run twice, unless its deploy failed (deliveries.ts). A signed
// delivery is known by its body, which the signature covers, never by its unsigned delivery id.
import { createHmac, timingSafeEqual } from "node:crypto";
import type http from "node:http";
import { authenticate } from "../auth/scopes.js";
import { isLockLost } from "../deploy/lock.js";
import { RELEASE_NAME } from "../deploy/release.js";
import { TurquoiseError, errorMessage } from "../errors.js";
import type { ServiceSpec, WebhookSpec } from "../spec/types.js";
import { bodyDeliveryKey, claimDelivery, deliveryActorSuffix, forgetOldDeliveries, type DeliveryClaim } from "./deliveries.js";
import type { ApiHost } from "./host.js";
import { errorBody, send, sendError } from "./http.js";
import { readRawBody } from "../util/http-body.js";

/** A delivery id is the sender's: GitHub's is a UUID; anything longer or odder is refused. */
const DELIVERY_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** GitHub's X-Hub-Signature-256 for body under secret. */
export function githubSignature(secret: string, body: Buffer | string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** Constant-time comparison of a received signature with the expected one. */
export function signatureMatches(secret: string, body: Buffer, received: string | undefined): boolean {
  if (!received) return false;
  const expected = Buffer.from(githubSignature(secret, body));
  const got = Buffer.from(received);
  // timingSafeEqual needs equal lengths; comparing with itself keeps the time the same either way.
  return got.length === expected.length ? timingSafeEqual(got, expected) : !timingSafeEqual(expected, expected);
}

/** The variables a payload offers the release template. */
export function payloadVariables(payload: Record<string, unknown>): Record<string, string> {
  const vars: Record<string, string> = {};
  const ref = typeof payload.ref === "string" ? payload.ref : undefined;
  if (ref?.startsWith("refs/tags/")) vars.tag = ref.slice("refs/tags/".length);
  if (ref?.startsWith("refs/heads/")) vars.branch = ref.slice("refs/heads/".length);
  const release = payload.release;
  // A GitHub "release" event carries an object; other CIs a release name.
  if (release && typeof release === "object" && typeof (release as Record<string, unknown>).tag_name === "string") vars.tag = (release as { tag_name: string }).tag_name;
  else if (typeof release === "string") vars.release = release;
  const headCommit = payload.head_commit as { id?: unknown } | null | undefined;
  const sha = typeof payload.after === "string" && /^[0-9a-f]{40}$/.test(payload.after) ? payload.after : typeof headCommit?.id === "string" ? headCommit.id : undefined;
  if (sha && /^[0-9a-f]{7,64}$/.test(sha)) {
    vars.sha = sha;
    vars.sha7 = sha.slice(0, 7);
  }
  return vars;
}

export type ReleaseFromPayload = { release: string } | { ignored: string } | { error: string };

/** Which release a delivery deploys, by the service's rule; or why it deploys nothing. */
export function releaseFromPayload(hook: WebhookSpec, payload: Record<string, unknown>, fromGitHub: boolean): ReleaseFromPayload {
  const vars = payloadVariables(payload);
  if (hook.branches && vars.branch !== undefined && !hook.branches.includes(vars.branch)) {
    return { ignored: `a push to ${vars.branch}, and webhook.branches lists only ${hook.branches.join(", ")}` };
  }
  const template = hook.release ?? (fromGitHub ? "{tag}" : "{release}");
  const missing: string[] = [];
  const release = template.replace(/\{([a-z0-9]+)\}/g, (_, name: string) => {
    const v = vars[name];
    if (v === undefined) missing.push(name);
    return v ?? "";
  });
  if (missing.length) {
    const offered = Object.keys(vars).length ? `it offers ${Object.keys(vars).map((k) => `{${k}}`).join(", ")}` : "it offers none of {tag}, {branch}, {sha}, {sha7}, {release}";
    return { error: `the payload maps to no release: webhook.release "${template}" needs ${missing.map((m) => `{${m}}`).join(", ")}, and ${offered}` };
  }
  if (!RELEASE_NAME.test(release)) return { error: `the payload maps to "${release.slice(0, 80)}", which is not a release name (letters, digits, '.', '_' or '-')` };
  return { release };
}

/**
 * Handles a delivery before the API's token check: a GitHub delivery carries no token, only its
 * signature. Answers: 401 bad or missing signature/token, 403 a token for another service, 404
 * unknown service, 413 a body over 1 MiB, 421 this agent does not lead (several share the store), 422 a payload that maps to no release or a deploy that
 * failed; 200 a ping, an ignored push, a replayed delivery or a deploy that succeeded; 202 a
 * GitHub delivery whose deploy started (GitHub gives up on an answer after 10 s). A replayed
 * delivery whose deploy failed is not a replay: it runs again. A signed body sent again under a
 * new delivery id is a replay all the same.
 */
export async function handleHook(agent: ApiHost, service: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  try {
    // Before any check of the caller: a 404 says no more than that (no list of services, no file).
    const svc = Object.hasOwn(agent.spec.services, service) ? agent.spec.services[service]! : undefined;
    if (!svc) return refuse(res, 404, "NOT_FOUND", `no service named "${service.slice(0, 80)}"`);
    const body = await readRawBody(req);
    const signature = header(req, "x-hub-signature-256");
    const fromGitHub = header(req, "x-github-event") !== undefined || signature !== undefined;
    let who: string;
    if (signature !== undefined) {
      const secret = hookSecret(svc);
      if (!signatureMatches(secret, body, signature)) return refuse(res, 401, "UNAUTHORIZED", "X-Hub-Signature-256 does not match the body: check the webhook's secret, and that the body reaches the agent unaltered");
      who = "GitHub";
    } else {
      const scope = authenticate(req.headers.authorization, { adminToken: agent.token, registryToken: agent.registryToken, deployTokens: agent.deployTokens });
      if (!scope) return refuse(res, 401, "UNAUTHORIZED", "send X-Hub-Signature-256 (GitHub) or Authorization: Bearer <a deploy token for this service>");
      if (scope.kind === "registry" || scope.kind === "read" || (scope.kind === "deploy" && !scope.services.includes(service))) {
        return refuse(res, 403, "FORBIDDEN", `this token may not deploy ${service}`);
      }
      who = scope.kind === "deploy" ? `deploy token ${scope.id}${scope.name ? ` ${scope.name}` : ""}` : "admin token";
    }

    // As every write route: only the leading agent deploys; the others name it, after the caller proved itself.
    if (!agent.leads) throw await agent.leadership.notLeader(`POST /v1/hooks/${service}`);

    const payload = parsePayload(body);
    const event = header(req, "x-github-event");
    if (event === "ping") return send(res, 200, { ok: true, ping: true, service });
    if (event !== undefined && event !== "push" && event !== "release") return send(res, 200, { ok: true, ignored: `GitHub event "${event.slice(0, 40)}" deploys nothing: send push or release events` });
    if (event === "release" && payload.action !== "published") return send(res, 200, { ok: true, ignored: `a release ${String(payload.action).slice(0, 40)}, not published` });
    const target = releaseFromPayload(svc.webhook ?? {}, payload, fromGitHub);
    if ("ignored" in target) return send(res, 200, { ok: true, ignored: target.ignored });
    if ("error" in target) return refuse(res, 422, "USAGE", target.error);

    const given = header(req, "x-github-delivery") ?? header(req, "idempotency-key");
    if (given !== undefined && !DELIVERY_ID.test(given)) return refuse(res, 400, "USAGE", "the delivery id (X-GitHub-Delivery or Idempotency-Key) must be 1-128 letters, digits, '.', '_', ':' or '-'");
    // A signature covers the body only, not X-GitHub-Delivery: a signed delivery is known by its
    // body, so a captured one sent again under a new id cannot deploy again. GitHub's Redeliver
    // sends the same id and the same body, so it finds the same record (and runs again only if that
    // run failed); a new push is a new body. A token's holder may deploy at will anyway: its call is
    // known by the id it gives, and with none it runs every time it is sent.
    const key = signature !== undefined ? bodyDeliveryKey(body) : given;
    const delivery = given ?? null;
    let claim: DeliveryClaim | undefined;
    if (key !== undefined) {
      // Claimed before the deploy, atomically: two copies of one delivery (or of a redelivery of a failed one) run it once.
      const claimed = await claimDelivery(agent.store, service, key, target.release, delivery);
      if (!claimed.won) {
        const { earlier, outcome } = claimed;
        return send(res, 200, {
          ok: true, duplicate: true, delivery, key, release: earlier?.release ?? null, history: earlier?.historyId ?? null, outcome,
          // Which delivery id ran it: another id than this one's says the body was sent again under a new id.
          ...(earlier ? { earlierDelivery: earlier.delivery } : {}),
        });
      }
      claim = claimed.claim;
      void forgetOldDeliveries(agent.store, service).catch((e: unknown) => agent.event(service, "hook.unrecorded", `old delivery ids of ${service} were not forgotten: ${errorMessage(e)}`));
    }

    const attempt = claim?.attempt ?? null;
    const named = delivery ?? key;
    const actor = `webhook (${who}${sender(payload)}${named ? deliveryActorSuffix(named, attempt ?? 1) : ")"}`;
    const record = async (patch: Parameters<DeliveryClaim["update"]>[0]): Promise<void> => {
      await claim?.update(patch).catch((e: unknown) => agent.event(service, "hook.unrecorded", `delivery ${named} of ${service} was not recorded as ${patch.outcome ?? "started"}: ${errorMessage(e)}`, { delivery, key: key ?? null }));
    };
    let startedId: number | undefined;
    let started!: (id: number) => void;
    const whenStarted = new Promise<number>((resolve) => (started = resolve));
    const deploy = agent.orchestrator.deploy({
      service, release: target.release, actor, wait: true,
      onStarted: (id) => {
        startedId = id;
        started(id);
        void record({ historyId: id });
      },
    });
    // The delivery's record follows the deploy to its end, whether or not anyone still waits for the answer.
    const recorded = deploy.then(
      (out) => record({ historyId: out.history.id, outcome: "succeeded" }),
      async (e: unknown) => {
        // A flow that lost its lock is finished or undone by recovery: its history entry will say which.
        if (!(isLockLost(e) && startedId !== undefined)) await record({ outcome: "failed" });
        if (fromGitHub) agent.event(service, "hook.failed", `webhook deploy of ${service} ${target.release} failed: ${errorMessage(e)}`, { release: target.release, delivery, key: key ?? null });
      },
    );
    if (fromGitHub) {
      // Answer once the deploy has its history entry; one that fails before (no such release) is answered with why.
      const first = await Promise.race([whenStarted.then((id) => ({ id })), deploy.then(() => ({ id: startedId! }), (e: unknown) => ({ error: e }))]);
      if ("error" in first) {
        // Recorded as failed before the answer: a redelivery sent on reading it runs again.
        await recorded;
        return deployFailed(res, first.error, target.release, delivery, key);
      }
      return send(res, 202, { ok: true, accepted: true, service, release: target.release, delivery, key: key ?? null, attempt, history: first.id });
    }
    try {
      const out = await deploy;
      await recorded;
      send(res, 200, { ok: true, service, release: target.release, delivery, key: key ?? null, attempt, history: out.history.id, outcome: out.history.outcome });
    } catch (e) {
      await recorded;
      deployFailed(res, e, target.release, delivery, key);
    }
  } catch (e) {
    if (!res.headersSent) sendError(res, e);
  }
}

function deployFailed(res: http.ServerResponse, e: unknown, release: string, delivery: string | null, key: string | undefined): void {
  const history = e instanceof TurquoiseError ? ((e.data.history as { id?: number } | null | undefined)?.id ?? null) : null;
  send(res, 422, { ok: false, release, delivery, key: key ?? null, history, error: errorBody(e) });
}

function refuse(res: http.ServerResponse, status: number, code: string, message: string): void {
  send(res, status, { error: { code, message } });
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === "string" ? v : undefined;
}

function hookSecret(svc: ServiceSpec): string {
  const env = svc.webhook?.secretEnv;
  if (!env) throw new TurquoiseError("UNAUTHORIZED", `${svc.name} takes no signed deliveries: set webhook.secret_env in turquoise.yml`);
  const secret = process.env[env];
  if (!secret) throw new TurquoiseError("UNAUTHORIZED", `${svc.name}'s webhook secret is not set: the agent's environment has no ${env}`);
  return secret;
}

function parsePayload(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  try {
    const v = JSON.parse(body.toString("utf8")) as unknown;
    if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch { /* below */ }
  throw new TurquoiseError("USAGE", "the payload must be a JSON object (GitHub: content type application/json)");
}

/** ", by <login>" from a GitHub payload, as history shows who triggered a deploy. */
function sender(payload: Record<string, unknown>): string {
  const login = (payload.sender as { login?: unknown } | undefined)?.login;
  return typeof login === "string" && /^[A-Za-z0-9-]{1,39}$/.test(login) ? `, by ${login}` : "";
}
