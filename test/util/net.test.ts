// freePort: ports picked below the kernel's ephemeral range, where no listen(0) elsewhere can take them first.
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { PICKED_PORT_FLOOR, freePort, pickRange, readEphemeralRange } from "../../src/util/net.js";

describe("freePort", () => {
  it("picks below the ephemeral range the kernel states, from the floor up", () => {
    assert.deepEqual(pickRange("32768\t60999\n"), { low: PICKED_PORT_FLOOR, high: 32_767 });
    assert.deepEqual(pickRange("49152 65535"), { low: PICKED_PORT_FLOOR, high: 49_151 });
  });

  it("leaves the pick to the OS when the range leaves no room below it, or cannot be read", () => {
    for (const text of ["1024 65535", "20500 60999", "", "garbage", "-5 7", undefined]) assert.equal(pickRange(text), undefined, String(text));
  });

  it("gives ports a server can listen on, outside the ephemeral range, while the earlier ones stay taken", async () => {
    const range = pickRange(readEphemeralRange());
    const ephemeralLow = Number(readEphemeralRange()?.trim().split(/\s+/)[0]);
    assert.ok(range, "this Linux machine states an ephemeral range with room below it");
    const held: net.Server[] = [];
    try {
      for (let i = 0; i < 40; i++) {
        const port = await freePort();
        assert.ok(port >= range.low && port <= range.high && port < ephemeralLow, `port ${port}`);
        // Kept listening: a later pick that lands on it must try another.
        const srv = net.createServer();
        await new Promise<void>((resolve, reject) => srv.once("error", reject).listen(port, "127.0.0.1", () => resolve()));
        held.push(srv);
      }
    } finally {
      for (const srv of held) srv.close();
    }
  });
});
