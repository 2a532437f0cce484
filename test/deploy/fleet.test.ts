// What the fleet adds to a failed health check: where an instance listens when its check cannot reach it.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeListening } from "../../src/deploy/fleet.js";

describe("describeListening", () => {
  const inst = { host: "127.0.0.1", port: 41234 };

  it("says nothing when the instance listens where its check goes, on that address or on all", () => {
    assert.equal(describeListening([{ host: "127.0.0.1", port: 41234 }], inst), undefined);
    assert.equal(describeListening([{ host: "0.0.0.0", port: 41234 }, { host: "127.0.0.1", port: 9229 }], inst), undefined);
    assert.equal(describeListening([{ host: "::", port: 41234 }], inst), undefined);
  });

  it("names the ports it listens on instead of $PORT", () => {
    assert.equal(describeListening([{ host: "127.0.0.1", port: 3000 }], inst), "listening on 127.0.0.1:3000, not on $PORT=41234");
    assert.equal(describeListening([{ host: "0.0.0.0", port: 3000 }, { host: "::1", port: 3001 }], inst), "listening on 0.0.0.0:3000, [::1]:3001, not on $PORT=41234");
  });

  it("names an address the check does not reach, and an instance that listens on nothing", () => {
    assert.equal(describeListening([{ host: "::1", port: 41234 }], inst), "listening on [::1]:41234, which does not take the check's connections to 127.0.0.1:41234");
    assert.equal(describeListening([], inst), "not listening on any TCP port (its $PORT is 41234)");
  });
});
