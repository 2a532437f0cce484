// Runs nginx as a child process from a throwaway prefix directory, for comparisons.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { freePort, waitForPort } from "./net.js";

export interface RunningNginx {
  port: number;
  prefix: string;
  /** The master's pid: signal it (SIGHUP) to reload. */
  pid: number;
  stop(): Promise<void>;
}

/** Builds nginx.conf for a port on 127.0.0.1 and a prefix directory, both chosen by startNginx. */
export type NginxConf = (listenPort: number, prefix: string) => string;

/** Starts `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'` and waits until it accepts connections. */
export async function startNginx(conf: NginxConf, timeoutMs = 10_000): Promise<RunningNginx> {
  const prefix = await mkdtemp(path.join(os.tmpdir(), "turquoise-nginx-"));
  const port = await freePort();
  const confFile = path.join(prefix, "nginx.conf");
  await writeFile(confFile, conf(port, prefix));
  const errorLog = path.join(prefix, "error.log");
  // -e keeps nginx away from /var/log/nginx even before it reads the config.
  const child = spawn("nginx", ["-p", prefix, "-e", errorLog, "-c", confFile, "-g", "daemon off;"], { stdio: ["ignore", "inherit", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let dead = false;
  child.once("exit", () => (dead = true));
  try {
    await Promise.race([
      waitForPort(port, "127.0.0.1", timeoutMs),
      exited.then(() => Promise.reject(new Error(`nginx exited at startup; see ${errorLog}`))),
    ]);
  } catch (e) {
    if (!dead) child.kill("SIGKILL");
    throw e;
  }
  return { port, prefix, pid: child.pid!, stop: () => stopNginx(child, exited, prefix) };
}

async function stopNginx(child: ChildProcess, exited: Promise<void>, prefix: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill("SIGQUIT");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  }
  await rm(prefix, { recursive: true, force: true });
}

export interface NginxProxyConfOptions {
  /** Client keep-alive timeout in seconds; 0 answers every request with Connection: close. nginx's default otherwise. */
  keepaliveTimeoutS?: number;
  /** worker_processes: "auto" (one per core) unless a comparison needs nginx's count to match another proxy's. */
  workerProcesses?: number | "auto";
  /** A second server terminating TLS on 127.0.0.1:port with this certificate, to the same upstreams. */
  tls?: { port: number; serverName: string; certFile: string; keyFile: string };
}

/**
 * A minimal reverse proxy: keep-alive to the upstreams, no access log, loopback only. It sends the
 * upstream the same forwarding fields as Turquoise's proxy (Host as received, X-Forwarded-For,
 * -Proto, -Host, X-Real-IP, Forwarded), so that both proxies do the same job and the upstream
 * parses the same request from either.
 */
export function nginxProxyConf(upstreams: readonly { host: string; port: number }[], opts: NginxProxyConfOptions = {}): NginxConf {
  const keepalive = opts.keepaliveTimeoutS === undefined ? "" : `\n    keepalive_timeout ${opts.keepaliveTimeoutS}s;`;
  const location = `
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";
    }`;
  const tls = opts.tls
    ? `
  server {
    listen 127.0.0.1:${opts.tls.port} ssl;${keepalive}
    server_name ${opts.tls.serverName};
    ssl_certificate ${opts.tls.certFile};
    ssl_certificate_key ${opts.tls.keyFile};
    ssl_protocols TLSv1.2 TLSv1.3;${location}
  }`
    : "";
  return (listenPort, prefix) => `
worker_processes ${opts.workerProcesses ?? "auto"};
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  upstream app {
${upstreams.map((u) => `    server ${u.host}:${u.port};`).join("\n")}
    keepalive 256;
  }
  server {
    listen 127.0.0.1:${listenPort};${keepalive}${location}
  }${tls}
}
`;
}
