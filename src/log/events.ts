// What an agent event's type says about its log line: which part of Turquoise it comes from, and
// how loud it is. Events keep their names in the log, so `jq 'select(.event == "deploy.failed")'`
// finds what `turquoise` and /v1/events call deploy.failed.
import type { LogLevel } from "./settings.js";

export type Component = "agent" | "api" | "deploy" | "heal" | "health" | "metrics" | "migrate" | "proxy" | "watch";

/** By the type's first word; the exceptions below by the whole type. */
const BY_PREFIX: Record<string, Component> = {
  deploy: "deploy", rollback: "deploy", flip: "deploy", drain: "deploy", lock: "deploy", warm: "deploy", history: "deploy",
  recovered: "deploy", recovery: "deploy", canary: "deploy", preview: "deploy", resume: "deploy", signal: "deploy", route: "deploy", retire: "deploy",
  // A webhook's deploy that failed after its delivery was answered.
  hook: "deploy",
  heal: "heal",
  check: "health",
  migrate: "migrate",
  watch: "watch",
  proxy: "proxy",
  stream: "api",
};

const BY_TYPE: Record<string, Component> = {
  "instance.exited": "heal",
  "instance.replaced": "heal",
  "service.degraded": "heal",
  "service.rolled-back": "heal",
};

/** Something went wrong that needs no one at once, or was handled: a revert, a lost lock, a refusal. */
const WARNINGS = new Set([
  "deploy.reverted", "rollback.reverted", "deploy.aborted", "deploy.stopped", "rollback.stopped", "deploy.dropped", "flip.reverted", "drain.cut",
  "lock.lost", "heal.rollback", "heal.rollback-refused", "service.degraded", "service.held", "service.rolled-back",
  "instance.exited", "instance.refused", "instance.orphan", "instance.abandoned", "record.invalid", "record.repaired",
  "watch.refused", "stream.dropped",
]);

export function componentOf(type: string): Component {
  return BY_TYPE[type] ?? BY_PREFIX[type.split(".")[0]!] ?? "agent";
}

/** error: something failed (*.failed, *.error, *-failed); warn: see WARNINGS; info: the rest. */
export function levelOf(type: string): LogLevel {
  if (/(?:\.|-)(?:failed|error)$/.test(type)) return "error";
  return WARNINGS.has(type) ? "warn" : "info";
}
