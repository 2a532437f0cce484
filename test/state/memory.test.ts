import { MemoryStore } from "../../src/state/memory.js";
import { runStoreContract } from "./contract.test-suite.js";

runStoreContract("memory", async () => {
  const store = new MemoryStore();
  return { store, cleanup: () => store.close() };
});
