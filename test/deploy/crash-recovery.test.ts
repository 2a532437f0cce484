// The agent dying between any two journal writes, in-process: a deploy is abandoned at each of its
// failpoints (each entry its flow journals, the writes around the journal, and each boundary of an
// instance's start between its records and the runtime), then a new agent over the same store,
// machine and proxy adopts the instances, sweeps the orphans and recovers. It must finish or undo the flow (or resume a turquoise path) and leave
// exactly one live slot, no orphan instance, no journal, no lock and no history entry running.
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { AgentDied, SERVICE, World, type TestAgent } from "../support/world.js";

interface Scenario {
  name: string;
  /** A world with the live release deployed. */
  prepare(): Promise<{ world: World; agent: TestAgent }>;
  /** The deploy that is interrupted. */
  deploy(agent: TestAgent): Promise<unknown>;
  /** The release live before the deploy, and the one it goes to. */
  from: string;
  to: string;
  /** The database's schema version with each of them live, when there is a database. */
  schema?: Record<string, number>;
}

const simple: Scenario = {
  name: "v1 → v2",
  from: "v1",
  to: "v2",
  prepare: async () => {
    const world = await World.create();
    const agent = world.agent();
    await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
    return { world, agent };
  },
  deploy: (agent) => agent.orchestrator.deploy({ service: SERVICE, release: "v2", actor: "test" }),
};

/** v1 runs on schema 1 and v2 on 2 only: the path goes v1 → v1t (1..2), migrate 1 → 2, re-check v1t, v1t → v2. */
const turquoise: Scenario = {
  name: "v1 → v1t → v2 with a migration",
  from: "v1",
  to: "v2",
  schema: { v1: 1, v2: 2 },
  prepare: async () => {
    const world = await World.create({ serviceYaml: ['database: { driver: sqlite, url: "sqlite:books.db", migrations: migrations }'] });
    const migrations = path.join(world.dir, "migrations");
    await mkdir(migrations);
    await writeFile(path.join(migrations, "0001_books.up.sql"), "CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT);\n");
    await writeFile(path.join(migrations, "0001_books.down.sql"), "DROP TABLE books;\n");
    await writeFile(path.join(migrations, "0002_author.up.sql"), "ALTER TABLE books ADD COLUMN author TEXT;\n");
    await writeFile(path.join(migrations, "0002_author.down.sql"), "ALTER TABLE books DROP COLUMN author;\n");
    await world.release("v1", { min: 1, max: 1 });
    await world.release("v1t", { min: 1, max: 2 });
    await world.release("v2", { min: 2, max: 2 });
    const agent = world.agent();
    await agent.orchestrator.deploy({ service: SERVICE, release: "v1", actor: "test" });
    return { world, agent };
  },
  deploy: (agent) => agent.orchestrator.deploy({ service: SERVICE, release: "v2", via: "v1t", actor: "test" }),
};

/**
 * The failpoints a deploy passes when nothing goes wrong, in order, each with how many times it was
 * passed before: replicas start side by side, so only the nth pass of a point is the same on every run.
 */
async function failpointsOf(scenario: Scenario): Promise<Array<{ point: string; nth: number }>> {
  const { world, agent } = await scenario.prepare();
  try {
    const seen = new Map<string, number>();
    const points: Array<{ point: string; nth: number }> = [];
    agent.failpoint = (point) => {
      const nth = seen.get(point) ?? 0;
      seen.set(point, nth + 1);
      points.push({ point, nth });
    };
    await scenario.deploy(agent);
    await world.assertSettled(scenario.to);
    return points;
  } finally {
    await world.close();
  }
}

for (const scenario of [simple, turquoise]) {
  const points = await failpointsOf(scenario);
  const firstFlip = points.findIndex((p) => p.point === "flip:done");

  describe(`the agent dies during a deploy ${scenario.name}, and a new agent recovers`, () => {
    let world: World | undefined;
    afterEach(async () => world?.close());

    it("the flow passes its failpoints (where the tests below die)", () => {
      assert.ok(points.length >= 10 && firstFlip > 0, points.map((p) => p.point).join(", "));
    });

    for (const [i, { point: entry, nth }] of points.entries()) {
      // Once traffic has flipped, recovery goes forward: it finishes the flow or resumes the path.
      const expected = i >= firstFlip ? scenario.to : scenario.from;
      it(`dies at ${entry}${nth ? ` (pass ${nth + 1})` : ""} (#${i + 1}): ${expected} is live, nothing else runs`, async () => {
        const prepared = await scenario.prepare();
        world = prepared.world;
        const dying = prepared.agent;
        const [before] = await world.store.listHistory(SERVICE, 1);
        // The nth pass: a turquoise path journals start, flip... twice, and each replica starts alike.
        let passes = 0;
        dying.failpoint = (at, self) => {
          if (at !== entry || passes++ !== nth) return;
          throw self.die(`at ${entry}, pass ${nth + 1}`);
        };
        await assert.rejects(scenario.deploy(dying), AgentDied);

        // A journal, a lock or a history entry: the dead agent always leaves something to recover.
        const notes = await world.agent().start();
        assert.ok(notes.length >= 1, "recovery says what it did");
        await world.assertSettled(expected);
        if (scenario.schema) {
          const status = await world.agent().orchestrator.migrations(SERVICE, { action: "status", actor: "test" });
          assert.equal(status.current, scenario.schema[expected], "the database is on the live release's schema");
        }
        // The interrupted flow (if it got as far as a history entry) and any resumed one.
        const outcomes = (await world.store.listHistory(SERVICE)).filter((h) => h.id > before!.id).map((h) => h.outcome);
        if (expected === scenario.to) assert.ok(outcomes.includes("succeeded"), outcomes.join(", "));
        else assert.ok(outcomes.every((o) => o === "aborted"), outcomes.join(", "));
      });
    }
  });
}
