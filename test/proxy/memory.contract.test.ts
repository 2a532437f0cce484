// The memory proxy (the built-in data plane in this process, driven by direct calls) against the
// shared Proxy contract suite, and the faults it injects for in-process deploy tests.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { MemoryProxy } from "../../src/proxy/memory.js";
import { runProxyContract } from "./contract.test-suite.js";
import { request, route, startUpstream, type TestUpstream } from "./helpers.js";

runProxyContract({
  name: "memory",
  start: async () => {
    const proxy = await MemoryProxy.start();
    return { proxy, baseUrl: proxy.url, close: () => proxy.close(2_000) };
  },
});

describe("MemoryProxy failure injection", () => {
  let proxy: MemoryProxy;
  let blue: TestUpstream;
  let green: TestUpstream;
  before(async () => {
    proxy = await MemoryProxy.start();
    [blue, green] = await Promise.all([startUpstream("blue"), startUpstream("green")]);
  });
  after(async () => {
    await proxy.close();
    await Promise.all([blue.close(), green.close()]);
  });
  const who = async () => (await request(`${proxy.url}/`)).text;

  it("failApply rejects `times` applies and keeps the table in use", async () => {
    await proxy.apply({ version: 1, routes: [route("books", "books:blue", [blue.upstream])] });
    proxy.inject({ times: 1, failApply: "connection refused" });
    await assert.rejects(proxy.apply({ version: 2, routes: [route("books", "books:green", [green.upstream])] }), /connection refused \(injected\)/);
    assert.match(await who(), /"blue"/);
    assert.equal(proxy.table().version, 1);
    await proxy.apply({ version: 2, routes: [route("books", "books:green", [green.upstream])] });
    assert.match(await who(), /"green"/);
  });

  it("hangDrain answers nothing for its time, then rejects; failDrain rejects at once", async () => {
    proxy.inject({ times: 1, hangDrain: 200 });
    const t0 = Date.now();
    await assert.rejects(proxy.drain("books:blue", 5_000), /no answer within 200 ms/);
    assert.ok(Date.now() - t0 >= 190, `rejected after ${Date.now() - t0} ms`);
    proxy.inject({ times: 1, failDrain: "proxy restarting" });
    await assert.rejects(proxy.drain("books:blue", 5_000), /proxy restarting/);
    assert.deepEqual({ ...(await proxy.drain("books:blue", 5_000)), durationMs: 0 }, { poolId: "books:blue", completed: 0, cut: 0, durationMs: 0 });
  });

  it("a drain hung forever is ended by close()", async () => {
    const other = await MemoryProxy.start();
    other.inject({ hangDrain: Number.POSITIVE_INFINITY });
    const hung = other.drain("x", 1_000);
    await other.close();
    await assert.rejects(hung, /no answer/);
  });
});
