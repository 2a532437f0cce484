// What the HTTP API needs of the agent, and nothing more. The agent builds the API, so the API
// names this narrow view instead of the Agent class: no import runs back up to agent.ts, and a
// test stands the API up over a few real parts and small in-test fakes.
import type { DeployTokens } from "../auth/deploy-tokens.js";
import type { EventLog } from "../deploy/deps.js";
import type { Fleet } from "../deploy/fleet.js";
import type { Orchestrator } from "../deploy/orchestrator.js";
import type { Records } from "../deploy/records.js";
import type { CheckState } from "../health/checks.js";
import type { ProxyStats } from "../proxy/contract.js";
import type { Spec } from "../spec/types.js";
import type { Store } from "../state/contract.js";
import type { Registry } from "./registry.js";
import type { Logger } from "../log/logger.js";
import type { Leadership } from "../state/leader.js";

export interface ApiHost {
  readonly spec: Pick<Spec, "services" | "proxy">;
  readonly startedAt: number;
  /** Which project this agent serves (agentIdFor its state dir): the liveness probe shows it, so a CLI knows its own agent. */
  readonly identity: string;
  /** Where the API listens, as instances are told it. */
  readonly apiUrl: string;
  readonly token: string;
  readonly registryToken: string;
  readonly deployTokens: DeployTokens;
  readonly store: Store;
  readonly registry: Pick<Registry, "current" | "waitFor" | "onEvent" | "onProgress" | "onChange">;
  readonly records: Pick<Records, "color" | "slot" | "previous" | "degraded" | "quarantined" | "instances">;
  readonly fleet: Pick<Fleet, "list" | "logs">;
  readonly monitor: { state(id: string): CheckState | undefined };
  readonly proxy: { readonly pid: number; readonly listenPort: number; stats(): Promise<ProxyStats> };
  readonly orchestrator: Pick<Orchestrator, "service" | "deploy" | "rollback" | "plan" | "migrations" | "signalService" | "promote" | "abort" | "canaryOf">;
  /** Records an agent event: its log, the Store's event log, the event stream. */
  readonly event: EventLog;
  /** The agent's log: every request goes to it at debug level. */
  readonly log?: Logger;
  /** This agent leads (and took over): it takes writes. The one agent of an embedded store always does. */
  readonly leads: boolean;
  readonly leadership: Pick<Leadership, "shared" | "notLeader" | "view">;
  /** Stops the agent; with everything, also its instances and the proxy (`turquoise down`). */
  close(opts?: { everything?: boolean }): Promise<void>;
}
