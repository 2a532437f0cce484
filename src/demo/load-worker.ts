// Runs a LoadGenerator in its own process, so the load does not share an event loop with what
// it measures. Options arrive as JSON in argv[2]; "stop" over IPC ends the run; the report goes back over IPC.
import { LoadGenerator, type LoadOptions } from "./load.js";

const opts = JSON.parse(process.argv[2] ?? "{}") as LoadOptions;
const gen = new LoadGenerator(opts).start();
let sent = false;
const finish = async (p: Promise<unknown>) => {
  const report = await p;
  if (sent) return;
  sent = true;
  process.send?.({ type: "report", report }, () => process.exit(0));
};
process.on("message", (m: { type?: string }) => { if (m?.type === "stop") void finish(gen.stop()); });
process.on("disconnect", () => process.exit(0));
void finish(gen.done());
process.send?.({ type: "started" });
