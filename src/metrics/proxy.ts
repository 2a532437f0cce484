// The proxy's figures (a ProxyMetrics snapshot read over its control API at each scrape) as
// Prometheus metric families, registered in the agent's prom-client Registry beside its own. The
// proxy counts with plain numbers on its hot path; only this side knows the text format.

import type { Registry } from "prom-client";
import type { ProxyMetrics, ProxyRejectionCounts, ProxyTimeoutCounts } from "../proxy/contract.js";
import { STATUS_CLASSES } from "../proxy/counters.js";

type Labels = Record<string, string>;
type Sample = { value: number; labels: Labels; metricName?: string };
type MetricType = "counter" | "gauge" | "histogram";

/** What prom-client's Registry asks of a metric: its name, and its samples on demand. */
interface Family {
  name: string;
  help: string;
  type: MetricType;
  aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: MetricType; aggregator: "sum"; values: Sample[] }>;
  reset(): void;
}

/** Label values of the proxy's timeout and rejection kinds: Prometheus' snake_case. */
const TIMEOUT_KINDS: Record<keyof ProxyTimeoutCounts, string> = {
  clientHeader: "client_header",
  clientIdle: "client_idle",
  tunnelIdle: "tunnel_idle",
  tunnelHandshake: "tunnel_handshake",
  upstreamConnect: "upstream_connect",
  upstreamResponse: "upstream_response",
  upstreamIdle: "upstream_idle",
};
const REJECTION_REASONS: Record<keyof ProxyRejectionCounts, string> = {
  connections: "max_connections",
  headerTooLarge: "header_too_large",
  bodyTooLarge: "body_too_large",
  badRequest: "bad_request",
  upstreamQueue: "upstream_queue",
};

/** One scrape's read of the proxy: its snapshot, or undefined when it did not answer. */
export interface ProxyRead {
  snapshot: ProxyMetrics | undefined;
}

/**
 * Registers the proxy's families in `registry`. `read` gives the scrape under way's read of the
 * proxy, or undefined for a proxy that has no metrics (nginx).
 */
export function registerProxyMetrics(registry: Registry, read: () => ProxyRead | undefined): void {
  const register = (name: string, type: MetricType, help: string, samples: (r: ProxyRead | undefined) => Sample[]): void => {
    const f: Family = {
      name, help, type, aggregator: "sum",
      async get() {
        return { name, help, type, aggregator: "sum", values: samples(read()) };
      },
      reset() {},
    };
    registry.registerMetric(f as unknown as Parameters<Registry["registerMetric"]>[0]);
  };
  const family = (name: string, type: MetricType, help: string, samples: (m: ProxyMetrics) => Sample[]): void =>
    register(name, type, help, (r) => (r?.snapshot ? samples(r.snapshot) : []));
  const series = (m: ProxyMetrics) => m.requests.map((r) => ({ r, labels: { service: r.service, slot: r.slot } }));

  // A proxy without metrics (nginx) reads as undefined: no families at all, rather than a false alarm.
  register("turquoise_proxy_up", "gauge", "1 when this scrape read the proxy's counters, 0 when the proxy did not answer.", (r) => (r ? [{ value: r.snapshot ? 1 : 0, labels: {} }] : []));
  family("turquoise_proxy_start_time_seconds", "gauge", "When the proxy process started, in seconds since the epoch: its counters start from zero with it.", (m) => [{ value: m.startedAt / 1000, labels: {} }]);
  family("turquoise_proxy_requests_total", "counter", "Requests the proxy answered, by service, slot and status class (none: the client left, or the request was cut, before any answer). service=\"\": no route took it.", (m) =>
    series(m).flatMap(({ r, labels }) => STATUS_CLASSES.map((status_class, i) => ({ value: r.statuses[i] ?? 0, labels: { ...labels, status_class } }))),
  );
  family("turquoise_proxy_request_duration_seconds", "histogram", "From a request's arrival to its answer's end (an upgrade: to the upstream's 101 or refusal).", (m) =>
    series(m).flatMap(({ r, labels }) => {
      const out: Sample[] = [];
      let cumulative = 0;
      m.durationBuckets.forEach((le, i) => {
        cumulative += r.durations[i] ?? 0;
        out.push({ metricName: "turquoise_proxy_request_duration_seconds_bucket", value: cumulative, labels: { ...labels, le: String(le) } });
      });
      cumulative += r.durations[m.durationBuckets.length] ?? 0;
      out.push({ metricName: "turquoise_proxy_request_duration_seconds_bucket", value: cumulative, labels: { ...labels, le: "+Inf" } });
      out.push({ metricName: "turquoise_proxy_request_duration_seconds_sum", value: r.durationSum, labels });
      out.push({ metricName: "turquoise_proxy_request_duration_seconds_count", value: cumulative, labels });
      return out;
    }),
  );
  family("turquoise_proxy_upstream_errors_total", "counter", "Failed attempts to reach an upstream (refused, reset, timed out, bad answer), retried ones included.", (m) =>
    series(m).filter(({ r }) => r.service !== "").map(({ r, labels }) => ({ value: r.upstreamErrors, labels })),
  );
  family("turquoise_proxy_retries_total", "counter", "Requests sent again to another instance after a failed attempt that the upstream cannot have acted on.", (m) =>
    series(m).filter(({ r }) => r.service !== "").map(({ r, labels }) => ({ value: r.retries, labels })),
  );
  family("turquoise_proxy_in_flight_requests", "gauge", "Requests (and WebSocket tunnels) in flight now.", (m) => m.inFlight.map((f) => ({ value: f.requests, labels: { service: f.service, slot: f.slot } })));
  family("turquoise_proxy_ejections_total", "counter", "Instances the proxy took out of rotation by itself, at a refused connection or a reset it confirmed, before any health check.", (m) =>
    (["refused", "reset"] as const).map((reason) => ({ value: m.ejections[reason], labels: { reason } })),
  );
  family("turquoise_proxy_timeouts_total", "counter", "Waits the proxy cut short, by kind (proxy.timeouts in turquoise.yml).", (m) =>
    Object.entries(TIMEOUT_KINDS).map(([key, kind]) => ({ value: m.timeouts[key as keyof ProxyTimeoutCounts] ?? 0, labels: { kind } })),
  );
  family("turquoise_proxy_rejections_total", "counter", "Connections and requests refused at the edge, by reason (proxy.limits in turquoise.yml; bad_request: unparsable, or no or several Host headers).", (m) =>
    Object.entries(REJECTION_REASONS).map(([key, reason]) => ({ value: m.rejected[key as keyof ProxyRejectionCounts] ?? 0, labels: { reason } })),
  );
  family("turquoise_proxy_client_connections", "gauge", "Client connections open now.", (m) => [{ value: m.open.clientConnections, labels: {} }]);
  family("turquoise_proxy_upstream_connections", "gauge", "Connections to instances open now, busy or idle.", (m) => [{ value: m.open.upstreamConnections, labels: {} }]);
  family("turquoise_proxy_tunnels", "gauge", "Upgraded (WebSocket) connections open now.", (m) => [{ value: m.open.tunnels, labels: {} }]);
  family("turquoise_proxy_tunnels_opened_total", "counter", "Upgraded (WebSocket) connections opened: an instance answered 101.", (m) => [{ value: m.tunnelsOpened, labels: {} }]);
  family("turquoise_proxy_workers", "gauge", "The proxy's worker processes by state (starting, standby: a spare, serving, retiring).", (m) =>
    Object.entries(m.workers?.states ?? {}).map(([state, value]) => ({ value, labels: { state } })),
  );
  family("turquoise_proxy_workers_accepting", "gauge", "Serving proxy workers that accept new connections (with proxy.accept adaptive, as many as the cores can run).", (m) =>
    m.workers?.accepting === undefined ? [] : [{ value: m.workers.accepting, labels: {} }],
  );
  family("turquoise_proxy_worker_restarts_total", "counter", "Proxy workers that died unasked and were replaced.", (m) => (m.workers ? [{ value: m.workers.restarts, labels: {} }] : []));
}
