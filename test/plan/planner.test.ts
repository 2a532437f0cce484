import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { describePlan, planPath, type Plan, type PlanAction, type PlanInput, type ReleaseInfo, type StepInfo } from "../../src/plan/planner.js";
import { TurquoiseError } from "../../src/errors.js";

function rel(name: string, min: number, max: number): ReleaseInfo {
  return { name, schema: { min, max } };
}

function step(version: number, name: string, phase: "expand" | "contract", opts: { hasDown?: boolean; irreversible?: boolean } = {}): StepInfo {
  return { version, name, phase, hasDown: opts.hasDown ?? true, irreversible: opts.irreversible ?? false };
}

const ADD = step(2, "add_columns", "expand");
const DROP = step(3, "drop_name", "contract");
const INIT = step(1, "init", "expand");

function plan(p: Partial<PlanInput> & Pick<PlanInput, "target" | "current">): Plan {
  return planPath({ kind: "deploy", live: null, steps: [], ...p });
}

type Ok = Extract<Plan, { ok: true }>;
type Refused = Extract<Plan, { ok: false }>;

function ok(p: Plan): Ok {
  assert.ok(p.ok, `expected a plan, got: ${JSON.stringify(p)}`);
  return p;
}

function refused(p: Plan): Refused {
  assert.ok(!p.ok, `expected a refusal, got: ${JSON.stringify(p)}`);
  return p;
}

const start = (release: string): PlanAction => ({ do: "start", release });
const flip = (from: string | null, to: string): PlanAction => ({ do: "flip", from, to });
const recheck = (release: string): PlanAction => ({ do: "recheck", release });
function up(from: number, to: number, steps: string[], phase: "expand" | "contract" | "both"): PlanAction {
  return { do: "migrate", from, to, direction: "up", steps, phase };
}
function down(from: number, to: number, steps: string[], phase: "expand" | "contract" | "both"): PlanAction {
  return { do: "migrate", from, to, direction: "down", steps, phase };
}

describe("planPath: direct deploys", () => {
  const cases: Array<{ title: string; input: Parameters<typeof plan>[0]; shape: Ok["shape"]; actions: PlanAction[]; from: number; to: number }> = [
    {
      title: "flip only: no pending step",
      input: { live: rel("v1", 1, 2), target: rel("v2", 1, 2), current: 2, steps: [INIT, ADD] },
      shape: "flip-only",
      actions: [start("v2"), flip("v1", "v2")],
      from: 2,
      to: 2,
    },
    {
      title: "expand, then flip: both releases run on the new version",
      input: { live: rel("v1", 1, 2), target: rel("v2", 1, 2), current: 1, steps: [INIT, ADD] },
      shape: "expand-flip-contract",
      actions: [start("v2"), up(1, 2, ["0002_add_columns"], "expand"), flip("v1", "v2")],
      from: 1,
      to: 2,
    },
    {
      title: "expand, flip, contract",
      input: { live: rel("v1", 1, 2), target: rel("v2", 1, 3), current: 1, steps: [INIT, ADD, DROP] },
      shape: "expand-flip-contract",
      actions: [start("v2"), up(1, 2, ["0002_add_columns"], "expand"), flip("v1", "v2"), up(2, 3, ["0003_drop_name"], "contract")],
      from: 1,
      to: 3,
    },
    {
      title: "contract only, after the flip",
      input: { live: rel("v1", 1, 1), target: rel("v2", 1, 2), current: 1, steps: [INIT, step(2, "drop_name", "contract")] },
      shape: "expand-flip-contract",
      actions: [start("v2"), flip("v1", "v2"), up(1, 2, ["0002_drop_name"], "contract")],
      from: 1,
      to: 2,
    },
    {
      title: "an expand step the live release cannot run on waits until the target serves alone",
      input: { live: rel("v1", 1, 1), target: rel("v2", 1, 2), current: 1, steps: [INIT, ADD] },
      shape: "expand-flip-contract",
      actions: [start("v2"), flip("v1", "v2"), up(1, 2, ["0002_add_columns"], "expand")],
      from: 1,
      to: 2,
    },
    {
      title: "expand steps after the first contract step go after the flip too, phase both",
      input: {
        live: rel("v1", 1, 4),
        target: rel("v2", 1, 4),
        current: 1,
        steps: [INIT, ADD, DROP, step(4, "add_index", "expand")],
      },
      shape: "expand-flip-contract",
      actions: [start("v2"), up(1, 2, ["0002_add_columns"], "expand"), flip("v1", "v2"), up(2, 4, ["0003_drop_name", "0004_add_index"], "both")],
      from: 1,
      to: 4,
    },
    {
      title: "redeploy of the live release",
      input: { live: rel("v1", 1, 2), target: rel("v1", 1, 2), current: 2, steps: [INIT, ADD] },
      shape: "flip-only",
      actions: [start("v1"), flip("v1", "v1")],
      from: 2,
      to: 2,
    },
    {
      title: "first deploy with migrations: migrate first, then start on the final schema",
      input: { live: null, target: rel("v1", 2, 3), current: 0, steps: [INIT, ADD, DROP] },
      shape: "expand-flip-contract",
      actions: [up(0, 3, ["0001_init", "0002_add_columns", "0003_drop_name"], "both"), start("v1"), flip(null, "v1")],
      from: 0,
      to: 3,
    },
    {
      title: "first deploy without migrations",
      input: { live: null, target: rel("v1", 0, 0), current: 0, steps: [] },
      shape: "flip-only",
      actions: [start("v1"), flip(null, "v1")],
      from: 0,
      to: 0,
    },
    {
      title: "gaps between versions: only existing steps run",
      input: { live: rel("v1", 2, 5), target: rel("v2", 2, 9), current: 2, steps: [INIT, ADD, step(5, "add_tags", "expand")] },
      shape: "expand-flip-contract",
      actions: [start("v2"), up(2, 5, ["0005_add_tags"], "expand"), flip("v1", "v2")],
      from: 2,
      to: 5,
    },
    {
      title: "steps given out of order are run in version order",
      input: { live: rel("v1", 1, 3), target: rel("v2", 1, 3), current: 1, steps: [step(3, "add_tags", "expand"), ADD, INIT] },
      shape: "expand-flip-contract",
      actions: [start("v2"), up(1, 3, ["0002_add_columns", "0003_add_tags"], "expand"), flip("v1", "v2")],
      from: 1,
      to: 3,
    },
    {
      title: "a database ahead of the known steps stays where it is when the target runs on it",
      input: { live: rel("v1", 1, 9), target: rel("v2", 1, 9), current: 6, steps: [INIT, ADD] },
      shape: "flip-only",
      actions: [start("v2"), flip("v1", "v2")],
      from: 6,
      to: 6,
    },
    {
      title: "an explicit target version below the highest step stops there",
      input: { live: rel("v1", 1, 3), target: rel("v2", 1, 3), current: 1, steps: [INIT, ADD, DROP], targetVersion: 2 },
      shape: "expand-flip-contract",
      actions: [start("v2"), up(1, 2, ["0002_add_columns"], "expand"), flip("v1", "v2")],
      from: 1,
      to: 2,
    },
  ];
  for (const c of cases) {
    it(c.title, () => {
      const p = ok(plan(c.input));
      assert.equal(p.shape, c.shape);
      assert.deepEqual(p.actions, c.actions);
      assert.deepEqual([p.from, p.to], [c.from, c.to]);
    });
  }

  it("does not change its input", () => {
    const steps = [DROP, INIT, ADD];
    const input: PlanInput = { kind: "deploy", live: rel("v1", 1, 2), target: rel("v2", 1, 3), current: 1, steps };
    const copy = structuredClone(input);
    planPath(input);
    assert.deepEqual(input, copy);
  });

  it("says it is a redeploy, and direct", () => {
    const p = ok(plan({ live: rel("v1", 1, 2), target: rel("v1", 1, 2), current: 2, steps: [INIT, ADD] }));
    assert.deepEqual(p.summary, ['redeploy "v1", schema stays at 2', '"v1" runs on schema 1..2, which covers 2: no turquoise release needed']);
  });
});

describe("planPath: the turquoise path", () => {
  const breaking = { live: rel("v1", 1, 1), target: rel("v3", 3, 3), current: 1, steps: [INIT, ADD, DROP] };

  it("refuses without --via, naming which release lacks which version and what R must support", () => {
    const p = refused(plan(breaking));
    assert.deepEqual(p.reasons, [
      'target "v3" runs on schema 3..3 but the database is at 1',
      'live "v1" runs on schema 1..1 and would have to run on 2 during the expand step 0002_add_columns',
      "a turquoise release supporting schema 1..3 would make this safe: deploy with --via <release>",
    ]);
    assert.deepEqual(p.need, { min: 1, max: 3 });
  });

  it("names the contract step when the live release runs on the expand step but not on it", () => {
    const p = refused(plan({ ...breaking, live: rel("v1", 1, 2) }));
    assert.equal(p.reasons[1], 'live "v1" runs on schema 1..2 and would have to run on 3 during the contract step 0003_drop_name');
    assert.deepEqual(p.need, { min: 1, max: 3 });
  });

  it("lets a live release that runs on both versions carry the migration itself", () => {
    const p = ok(plan({ ...breaking, live: rel("v1", 1, 3) }));
    assert.equal(p.shape, "via-turquoise");
    assert.deepEqual(p.actions, [up(1, 3, ["0002_add_columns", "0003_drop_name"], "both"), recheck("v1"), start("v3"), flip("v1", "v3")]);
    assert.match(p.summary[1]!, /^live "v1" runs on schema 1\.\.3, which covers 1 and 3: it carries the migration/);
  });

  it("walks L → R, migrate, recheck R, R → T with --via", () => {
    const p = ok(plan({ ...breaking, via: rel("v2-t", 1, 3) }));
    assert.equal(p.shape, "via-turquoise");
    assert.deepEqual(p.actions, [
      start("v2-t"),
      flip("v1", "v2-t"),
      up(1, 3, ["0002_add_columns", "0003_drop_name"], "both"),
      recheck("v2-t"),
      start("v3"),
      flip("v2-t", "v3"),
    ]);
    assert.deepEqual([p.from, p.to], [1, 3]);
  });

  it("refuses a --via release that does not run on the current version", () => {
    const p = refused(plan({ ...breaking, via: rel("v2-t", 2, 3) }));
    assert.deepEqual(p.reasons, ['turquoise release "v2-t" runs on schema 2..3 but the database is at 1']);
    assert.equal(p.need, undefined);
  });

  it("refuses a --via release that does not run on the target version", () => {
    const p = refused(plan({ ...breaking, via: rel("v2-t", 1, 2) }));
    assert.deepEqual(p.reasons, ['turquoise release "v2-t" runs on schema 1..2 but the target "v3" needs 3']);
  });

  it("names both versions when the --via release lacks both", () => {
    const p = refused(plan({ ...breaking, via: rel("v2-t", 2, 2) }));
    assert.deepEqual(p.reasons, [
      'turquoise release "v2-t" runs on schema 2..2 but the database is at 1',
      'turquoise release "v2-t" runs on schema 2..2 but the target "v3" needs 3',
    ]);
  });

  it("honours --via when a direct path existed, and says so", () => {
    const p = ok(plan({ live: rel("v1", 1, 2), target: rel("v2", 1, 2), current: 1, steps: [INIT, ADD], via: rel("v1-t", 1, 2) }));
    assert.equal(p.shape, "via-turquoise");
    assert.deepEqual(p.actions, [start("v1-t"), flip("v1", "v1-t"), up(1, 2, ["0002_add_columns"], "both"), recheck("v1-t"), start("v2"), flip("v1-t", "v2")]);
    assert.ok(p.summary.includes('note: a direct path existed; --via "v1-t" was honoured as asked'), p.summary.join("\n"));
  });

  it("with --via and no migration, starts and flips through R without a migrate or recheck", () => {
    const p = ok(plan({ live: rel("v1", 2, 2), target: rel("v2", 2, 2), current: 2, steps: [INIT, ADD], via: rel("t", 2, 2) }));
    assert.deepEqual(p.actions, [start("t"), flip("v1", "t"), start("v2"), flip("t", "v2")]);
  });

  it("with --via naming the live release, starts and flips nothing extra", () => {
    const p = ok(plan({ ...breaking, live: rel("v1", 1, 3), via: rel("v1", 1, 3) }));
    assert.deepEqual(p.actions, [up(1, 3, ["0002_add_columns", "0003_drop_name"], "both"), recheck("v1"), start("v3"), flip("v1", "v3")]);
    assert.ok(p.summary.includes('note: live "v1" could have carried the migration without --via'), p.summary.join("\n"));
  });

  it("with --via and nothing live, flips from nothing to R", () => {
    const p = ok(plan({ live: null, target: rel("v3", 3, 3), current: 1, steps: [INIT, ADD, DROP], via: rel("t", 1, 3) }));
    assert.deepEqual(p.actions.slice(0, 2), [start("t"), flip(null, "t")]);
  });

  it("refuses --via naming the target itself", () => {
    const p = refused(plan({ ...breaking, via: rel("v3", 1, 3) }));
    assert.deepEqual(p.reasons, ['--via "v3" is the target itself: a turquoise release must be another release']);
  });

  it("says a path exists without --via when the --via release is unfit", () => {
    const p = refused(plan({ live: rel("v1", 1, 2), target: rel("v2", 1, 2), current: 1, steps: [INIT, ADD], via: rel("t", 2, 2) }));
    assert.deepEqual(p.reasons, ['turquoise release "t" runs on schema 2..2 but the database is at 1', "without --via this deploy has a safe path"]);
  });
});

describe("planPath: rollback", () => {
  const steps = [INIT, ADD, DROP];

  it("rolls back down directly when the target runs on both versions", () => {
    const p = ok(planPath({ kind: "rollback", live: rel("green", 2, 3), target: rel("blue", 1, 3), current: 3, steps, targetVersion: 1 }));
    assert.equal(p.shape, "expand-flip-contract");
    assert.deepEqual(p.actions, [start("blue"), flip("green", "blue"), down(3, 1, ["0003_drop_name", "0002_add_columns"], "both")]);
    assert.deepEqual([p.from, p.to], [3, 1]);
    assert.equal(p.summary[0], 'roll back to "blue" from "green", schema 3 → 1');
  });

  it("walks the schema down to the target's max by default, under a live release that runs on both", () => {
    const p = ok(planPath({ kind: "rollback", live: rel("green", 2, 3), target: rel("blue", 1, 2), current: 3, steps }));
    assert.deepEqual(p.actions, [down(3, 2, ["0003_drop_name"], "both"), recheck("green"), start("blue"), flip("green", "blue")]);
  });

  it("goes green → turquoise → migrate down → blue with --via", () => {
    const p = ok(planPath({ kind: "rollback", live: rel("green", 3, 3), target: rel("blue", 1, 1), via: rel("teal", 1, 3), current: 3, steps }));
    assert.equal(p.shape, "via-turquoise");
    assert.deepEqual(p.actions, [
      start("teal"),
      flip("green", "teal"),
      down(3, 1, ["0003_drop_name", "0002_add_columns"], "both"),
      recheck("teal"),
      start("blue"),
      flip("teal", "blue"),
    ]);
  });

  it("refuses without a turquoise release, in rollback words", () => {
    const p = refused(planPath({ kind: "rollback", live: rel("green", 3, 3), target: rel("blue", 1, 1), current: 3, steps }));
    assert.deepEqual(p.reasons, [
      'target "blue" runs on schema 1..1 but the database is at 3',
      'live "green" runs on schema 3..3 and would have to run on 2 after reverting step 0003_drop_name',
      "a turquoise release supporting schema 1..3 would make this safe: roll back with --via <release>",
    ]);
    assert.deepEqual(p.need, { min: 1, max: 3 });
  });

  const irreversibleCases: Array<{ title: string; steps: StepInfo[]; reasons: string[] }> = [
    {
      title: "a step without a down migration",
      steps: [INIT, ADD, step(3, "drop_name", "contract", { hasDown: false })],
      reasons: ["step 0003_drop_name has no down migration"],
    },
    {
      title: "an irreversible step",
      steps: [INIT, ADD, step(3, "drop_name", "contract", { irreversible: true })],
      reasons: ['step 0003_drop_name is irreversible: it destroyed what "blue" needs'],
    },
    {
      title: "every such step, in the order they would be reverted",
      steps: [INIT, step(2, "add_columns", "expand", { hasDown: false }), step(3, "drop_name", "contract", { irreversible: true, hasDown: false })],
      reasons: ['step 0003_drop_name is irreversible: it destroyed what "blue" needs', "step 0002_add_columns has no down migration"],
    },
  ];
  for (const c of irreversibleCases) {
    it(`refuses ${c.title}, even with --via`, () => {
      const p = refused(planPath({ kind: "rollback", live: rel("green", 3, 3), target: rel("blue", 1, 1), via: rel("teal", 1, 3), current: 3, steps: c.steps }));
      assert.deepEqual(p.reasons, c.reasons);
      assert.equal(p.need, undefined);
    });
  }

  it("ignores a step without down that stays applied", () => {
    const p = ok(planPath({ kind: "rollback", live: rel("green", 1, 3), target: rel("blue", 1, 2), current: 3, steps: [INIT, step(2, "add_columns", "expand", { hasDown: false }), DROP] }));
    assert.deepEqual(p.actions[0], down(3, 2, ["0003_drop_name"], "both"));
  });

  it("refuses to walk down from a version whose step is not known", () => {
    const p = refused(planPath({ kind: "rollback", live: rel("green", 1, 5), target: rel("blue", 1, 2), current: 5, steps: [INIT, ADD, DROP] }));
    assert.deepEqual(p.reasons, ["the database is at 5 but no migration step 5 is known here, so it cannot be walked down"]);
  });

  it("lands on the step below when the target's max falls in a gap", () => {
    const p = ok(planPath({ kind: "rollback", live: rel("green", 1, 5), target: rel("blue", 1, 4), current: 5, steps: [INIT, ADD, step(5, "add_tags", "expand")] }));
    assert.deepEqual(p.actions[0], down(5, 2, ["0005_add_tags"], "both"));
    assert.equal(p.to, 2);
  });
});

describe("planPath: refusals for versions and ranges", () => {
  const base = { live: rel("v1", 1, 3), target: rel("v2", 1, 3), current: 1, steps: [INIT, ADD, step(5, "add_tags", "expand")] };

  it("refuses a target the target release cannot run on", () => {
    const p = refused(plan({ ...base, targetVersion: 5 }));
    assert.deepEqual(p.reasons, ['target "v2" runs on schema 1..3 but the target version is 5']);
    assert.equal(p.need, undefined);
  });

  it("refuses when no step lands in the target's range", () => {
    const p = refused(plan({ ...base, target: rel("v3", 3, 4) }));
    assert.deepEqual(p.reasons, ['target "v3" runs on schema 3..4 but no migration step has a version in 3..4']);
  });

  it("refuses a target version beyond the last step", () => {
    const p = refused(plan({ ...base, target: rel("v2", 1, 9), targetVersion: 7 }));
    assert.deepEqual(p.reasons, ["no migration step reaches version 7 (the highest known step is 5)"]);
  });

  it("refuses a target version when no step is known", () => {
    const p = refused(plan({ ...base, steps: [], current: 0, target: rel("v2", 0, 3), targetVersion: 1 }));
    assert.deepEqual(p.reasons, ["no migration step reaches version 1 (no migration steps are known)"]);
  });

  it("refuses a target version in a gap, since the database can never be at it", () => {
    const p = refused(plan({ ...base, target: rel("v2", 1, 9), targetVersion: 3 }));
    assert.deepEqual(p.reasons, ["no migration step has version 3: the database can be at 2 or 5, not in between"]);
  });

  it("accepts target version 0: every step reverted", () => {
    const p = ok(planPath({ kind: "rollback", live: rel("green", 0, 2), target: rel("blue", 0, 0), current: 2, steps: [INIT, ADD], targetVersion: 0 }));
    assert.deepEqual(p.actions[0], down(2, 0, ["0002_add_columns", "0001_init"], "both"));
  });

  it("accepts the current version as the target even when no step has it", () => {
    const p = ok(plan({ live: rel("v1", 1, 9), target: rel("v2", 1, 9), current: 6, steps: [INIT, ADD], targetVersion: 6 }));
    assert.deepEqual(p.actions, [start("v2"), flip("v1", "v2")]);
  });

  it("refuses a target version that is not a whole number from 0", () => {
    for (const targetVersion of [-1, 1.5, Number.NaN]) {
      const p = refused(plan({ ...base, targetVersion }));
      assert.deepEqual(p.reasons, [`target version ${targetVersion} is not a schema version: versions are whole numbers from 0`]);
    }
  });

  it("refuses an invalid range, naming the release and its role", () => {
    assert.deepEqual(refused(plan({ ...base, target: rel("v2", 3, 1) })).reasons, ['target "v2" has an invalid schema range 3..1: min is above max']);
    assert.deepEqual(refused(plan({ ...base, live: rel("v1", 2, 1) })).reasons, ['live "v1" has an invalid schema range 2..1: min is above max']);
    assert.deepEqual(refused(plan({ ...base, via: rel("t", -1, 2) })).reasons, ['turquoise release "t" has an invalid schema range -1..2: versions are whole numbers from 0']);
  });

  it("throws on duplicate step versions: a bug upstream, not a refusal", () => {
    assert.throws(
      () => plan({ ...base, steps: [INIT, ADD, step(2, "other", "expand")] }),
      (e: unknown) => e instanceof TurquoiseError && e.code === "INTERNAL" && /two steps have version 2/.test(e.message),
    );
  });

  it("throws on a database version that is not a whole number from 0", () => {
    assert.throws(() => plan({ ...base, current: -1 }), TurquoiseError);
  });
});

describe("describePlan", () => {
  it("numbers the actions of a direct deploy under its summary", () => {
    const p = plan({ live: rel("v1", 1, 2), target: rel("v2", 1, 3), current: 1, steps: [INIT, ADD, DROP] });
    assert.deepEqual(describePlan(p), [
      'deploy "v2" over "v1", schema 1 → 3',
      '"v2" runs on schema 1..3, which covers 1 and 3: no turquoise release needed',
      '  1. start "v2" in the idle slot: health, smoke',
      "  2. migrate up 1 → 2 (expand): 0002_add_columns",
      '  3. flip "v1" → "v2": verify, drain, retire "v1"',
      "  4. migrate up 2 → 3 (contract): 0003_drop_name",
    ]);
  });

  it("says which schema the re-check proves, on the turquoise path", () => {
    const p = plan({ live: rel("v1", 1, 1), target: rel("v3", 3, 3), current: 1, steps: [INIT, ADD, DROP], via: rel("v2-t", 1, 3) });
    assert.deepEqual(describePlan(p), [
      'deploy "v3" over "v1", schema 1 → 3',
      'turquoise release "v2-t" runs on schema 1..3, which covers 1 and 3',
      '  1. start "v2-t" in the idle slot: health, smoke',
      '  2. flip "v1" → "v2-t": verify, drain, retire "v1"',
      "  3. migrate up 1 → 3 (both): 0002_add_columns, 0003_drop_name",
      '  4. recheck "v2-t" on schema 3: health, smoke',
      '  5. start "v3" in the idle slot: health, smoke',
      '  6. flip "v2-t" → "v3": verify, drain, retire "v2-t"',
    ]);
  });

  it("describes a first deploy", () => {
    const p = plan({ live: null, target: rel("v1", 1, 1), current: 0, steps: [INIT] });
    assert.deepEqual(describePlan(p), [
      'deploy "v1" with nothing live, schema 0 → 1',
      'nothing is live: migrate first, then start "v1" on schema 1',
      "  1. migrate up 0 → 1 (expand): 0001_init",
      '  2. start "v1" in the idle slot: health, smoke',
      '  3. flip traffic to "v1": verify',
    ]);
  });

  it("lists the reasons of a refusal", () => {
    const p = plan({ live: rel("v1", 1, 1), target: rel("v3", 3, 3), current: 1, steps: [INIT, ADD, DROP] });
    assert.deepEqual(describePlan(p), [
      "refused:",
      '  - target "v3" runs on schema 3..3 but the database is at 1',
      '  - live "v1" runs on schema 1..1 and would have to run on 2 during the expand step 0002_add_columns',
      "  - a turquoise release supporting schema 1..3 would make this safe: deploy with --via <release>",
    ]);
  });
});
