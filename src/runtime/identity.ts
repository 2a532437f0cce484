// How an instance is known again after the agent that started it is gone: its id, chosen and
// recorded before it starts, and this agent's id, both carried by the instance itself (process:
// its environment; docker: labels too). A restarted agent or `turquoise down` finds by these marks
// what a crash between starting and recording would otherwise leave unknown and running.
import { createHash, randomBytes } from "node:crypto";
import type { Slot } from "./contract.js";

/** In every instance's environment: the instance's own id. */
export const INSTANCE_ENV = "TURQUOISE_INSTANCE";
/** In every instance's environment: the id of the agent (state dir) that started it. */
export const AGENT_ENV = "TURQUOISE_AGENT";

/**
 * The agent's id: the same for every agent process of one state dir, so an agent restarted after a
 * crash (or `down` run with no agent) recognises what the one before it started, and two state dirs
 * on one machine or one Docker daemon never take each other's instances.
 */
export function agentIdFor(stateDir: string): string {
  return createHash("sha256").update(stateDir).digest("hex").slice(0, 12);
}

/**
 * The mark this agent's instances carry: its state dir's id, or, for agents that share an etcd
 * store, one id for all of them (the endpoints and prefix), so a leader that takes over finds by
 * their marks the instances another agent started on this machine, recorded or not.
 */
export function markIdFor(stateDir: string, state?: { driver: string; etcd?: { endpoints: string[]; prefix: string } }): string {
  if (state?.driver !== "etcd" || !state.etcd) return agentIdFor(stateDir);
  return createHash("sha256").update(`etcd ${[...state.etcd.endpoints].sort().join(" ")} ${state.etcd.prefix}`).digest("hex").slice(0, 12);
}

/** A fresh instance id; the fleet picks it before the start so that it can be recorded first. */
export function newInstanceId(service: string, slot: Slot): string {
  return `${service}-${slot}-${randomBytes(3).toString("hex")}`;
}
