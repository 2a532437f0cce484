// Starts load-worker.ts as a child process and talks to it over IPC.
import { fork, type ChildProcess } from "node:child_process";
import type { LoadOptions, LoadReport } from "./load.js";

export class LoadProcess {
  private constructor(private readonly child: ChildProcess, private readonly report: Promise<LoadReport>) {}

  static async start(opts: LoadOptions): Promise<LoadProcess> {
    const child = fork(new URL("./load-worker.js", import.meta.url), [JSON.stringify(opts)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    let started!: () => void;
    const ready = new Promise<void>((r) => (started = r));
    const report = new Promise<LoadReport>((resolve, reject) => {
      child.on("message", (m: { type: string; report?: LoadReport }) => {
        if (m.type === "started") started();
        if (m.type === "report") resolve(m.report!);
      });
      child.on("exit", (code) => reject(new Error(`load worker exited with code ${code} before reporting`)));
    });
    report.catch(() => undefined);
    await ready;
    return new LoadProcess(child, report);
  }

  async stop(): Promise<LoadReport> {
    if (this.child.connected) this.child.send({ type: "stop" });
    return this.report;
  }
}
