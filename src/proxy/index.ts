// The one place that picks the Proxy driver, the built-in proxy process or nginx, for the agent and
// for `turquoise down` alike, so callers depend on the contract and not on a driver.
import { TurquoiseError } from "../errors.js";
import { DockerApi } from "../runtime/docker-api.js";
import { connectProxy, resolveWorkers, spawnProxy, stopProxy } from "./builtin.js";
import type { Proxy } from "./contract.js";
import { NginxProxy } from "./nginx.js";
import type { Logger } from "../log/logger.js";
import type { LogSettings } from "../log/settings.js";

/** The spec's proxy block, and the state dir the proxy keeps its files in. */
export interface ProxyOptions {
  driver: "builtin" | "nginx";
  stateDir: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** The built-in proxy's TLS listener, when it terminates TLS. */
  tls?: { host: string; port: number };
  nginx: { binary: string; template?: string; container?: string };
  /** The built-in proxy's workers: a count, or one per core. */
  workers: number | "auto";
  /** Which of them accept new connections. */
  accept?: "adaptive" | "all";
  /** The spec file, named in what the factory logs. */
  specFile: string;
  /** The log settings a proxy process it starts gets; its own defaults when absent. */
  log?: LogSettings;
}

/** The data plane the agent drives. pid: the built-in proxy's process, which the agent watches; 0 for nginx. */
export interface OpenedProxy {
  proxy: Proxy;
  pid: number;
  listenPort: number;
  /** It was running already (it kept serving while no agent ran): not this agent's to stop if its start fails. */
  adopted: boolean;
}

/**
 * The data plane for this state dir: adopted when it already runs (it kept serving while no
 * agent ran), else started.
 */
export async function openProxy(opts: ProxyOptions, log: Logger): Promise<OpenedProxy> {
  if (opts.driver === "nginx") {
    const nginx = nginxFor(opts);
    const adopted = await nginx.adopt();
    if (!adopted) await nginx.start();
    log.info(adopted ? "proxy.adopted" : "proxy.started", `${adopted ? "adopted running" : "started"} nginx on ${opts.host}:${nginx.listenPort}`);
    return { proxy: nginx, pid: 0, listenPort: nginx.listenPort, adopted };
  }
  let adopted = await connectProxy(opts.stateDir);
  if (adopted && opts.port !== 0 && adopted.listenPort !== opts.port) {
    log.warn("proxy.replacing", `the running proxy listens on port ${adopted.listenPort} but ${opts.specFile} says ${opts.port}: restarting it`);
    await stopProxy(opts.stateDir);
    adopted = undefined;
  }
  // Its sockets are bound once, by its supervisor: another TLS listener takes a new process.
  const tlsNow = adopted?.tlsListen ? `${adopted.tlsListen.host}:${adopted.tlsListen.port}` : "none";
  const tlsWanted = opts.tls ? `${opts.tls.host}:${opts.tls.port}` : "none";
  if (adopted && tlsNow !== tlsWanted && !(opts.tls?.port === 0 && adopted.tlsListen)) {
    log.info("proxy.restarting", `the running proxy's TLS listener is ${tlsNow} but ${opts.specFile} says ${tlsWanted}: restarting it`);
    await stopProxy(opts.stateDir);
    adopted = undefined;
  }
  const workers = resolveWorkers(opts.workers);
  const acceptNow = adopted ? (await adopted.proxy.health()).accept : undefined;
  // A supervisor from before proxy.accept has every worker accept, and cannot run workers that
  // know modes: only a restart of the proxy brings it.
  if (adopted && acceptNow === undefined && opts.accept === "adaptive" && workers > 1) {
    log.info("proxy.accept-unchanged", `the running proxy predates proxy.accept: every worker accepts until it restarts (turquoise down, then turquoise up)`);
  }
  // With one worker the mode changes nothing: no upgrade for it alone.
  const acceptChanged = adopted !== undefined && acceptNow !== undefined && opts.accept !== undefined && acceptNow !== opts.accept && workers > 1;
  if (adopted && (adopted.workers !== workers || acceptChanged)) {
    // No restart for that: an in-place upgrade refuses no connection.
    const said = acceptChanged
      ? `the running proxy has ${adopted.workers} worker(s) accepting ${acceptNow} but ${opts.specFile} says ${opts.workers}, ${opts.accept}`
      : `the running proxy has ${adopted.workers} worker(s) but ${opts.specFile} says ${opts.workers}`;
    await adopted.proxy.upgrade({ workers, ...(acceptChanged ? { accept: opts.accept } : {}) }).then(
      () => log.info("proxy.upgraded", `${said}: upgraded it in place`),
      (e: unknown) => log.error("proxy.upgrade-failed", `${said}, and it could not be upgraded in place (${e instanceof Error ? e.message : e}); it keeps serving as it is`),
    );
  }
  const proxied = adopted ?? (await spawnProxy({ stateDir: opts.stateDir, listenHost: opts.host, listenPort: opts.port, ...(opts.tls ? { tlsListen: opts.tls } : {}), workers: opts.workers, ...(opts.accept ? { accept: opts.accept } : {}), ...(opts.log ? { log: opts.log } : {}) }).catch((e: unknown) => {
    throw e instanceof TurquoiseError && e.code === "CONFLICT" && e.data.addressInUse ? new TurquoiseError("CONFLICT", `${e.message} (set proxy.listen${opts.tls ? " or proxy.tls.listen" : ""} in ${opts.specFile})`, { data: e.data }) : e;
  }));
  const withTls = proxied.tlsListen ? ` and TLS on ${proxied.tlsListen.host}:${proxied.tlsListen.port}` : "";
  log.info(adopted ? "proxy.adopted" : "proxy.started", adopted ? `adopted running proxy (pid ${proxied.pid}) on ${opts.host}:${proxied.listenPort}${withTls}` : `proxy (pid ${proxied.pid}) listening on ${opts.host}:${proxied.listenPort}${withTls}`, { data: { pid: proxied.pid } });
  return { ...proxied, adopted: adopted !== undefined };
}

/** Stops the data plane for this state dir, whichever driver runs it; in-flight requests finish first. False: nothing ran. */
export async function stopDataPlane(opts: ProxyOptions): Promise<boolean> {
  if (opts.driver === "nginx") return nginxFor(opts).stop();
  return stopProxy(opts.stateDir);
}


/** One way to reach nginx for starting, adopting and stopping alike: a container's nginx is signalled through the Docker API. */
function nginxFor(opts: ProxyOptions): NginxProxy {
  const { binary, template, container } = opts.nginx;
  const signal = container ? dockerSignal(container) : undefined;
  return new NginxProxy({ stateDir: opts.stateDir, listenHost: opts.host, listenPort: opts.port, binary, ...(template ? { template } : {}), ...(signal ? { signal } : {}) });
}

/** nginx in a container: reloads signal the container through the Docker API, as the seed article does. */
function dockerSignal(container: string): (sig: NodeJS.Signals) => Promise<void> {
  const api = new DockerApi({});
  return async (sig) => api.killContainer(container, sig);
}
