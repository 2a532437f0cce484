import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeDatabase, redactUrl, scrubSecrets } from "../../src/migrate/redact.js";

describe("redactUrl", () => {
  it("keeps scheme, user, host, port and database, and masks the password", () => {
    assert.equal(redactUrl("postgres://app:s3cret@db.internal:6432/books"), "postgres://app:***@db.internal:6432/books");
    assert.equal(redactUrl("postgresql://app@db/books"), "postgresql://app@db/books");
    assert.equal(redactUrl("postgres://db/books"), "postgres://db/books");
  });

  it("drops the query, which can carry a password too", () => {
    assert.equal(redactUrl("postgres://app@db/books?password=s3cret&sslmode=require"), "postgres://app@db/books");
  });

  it("masks the password of a URL that does not parse", () => {
    const out = redactUrl("postgres://app:s3cr%et@h1:5432,h2:5432/books?x=1");
    assert.ok(!out.includes("s3cr"), out);
    assert.equal(out, "postgres://app:***@h1:5432,h2:5432/books");
  });

  it("leaves sqlite URLs and plain paths as they are", () => {
    assert.equal(redactUrl("sqlite:data/app.db"), "sqlite:data/app.db");
    assert.equal(redactUrl("/var/lib/app.db"), "/var/lib/app.db");
  });
});

describe("describeDatabase", () => {
  it("names a postgres database as host:port/dbname", () => {
    assert.equal(describeDatabase("postgres://app:s3cret@db.internal:6432/books"), "db.internal:6432/books");
    assert.equal(describeDatabase("postgres://app:s3cret@db.internal/books"), "db.internal:5432/books");
    assert.equal(describeDatabase("postgresql://app@[::1]:5433/books"), "[::1]:5433/books");
    assert.equal(describeDatabase("postgres://app@db"), "db:5432/app");
  });

  it("names a sqlite database by its path", () => {
    assert.equal(describeDatabase("sqlite:///var/lib/app.db"), "/var/lib/app.db");
    assert.equal(describeDatabase("sqlite:data/app.db"), "data/app.db");
  });
});

describe("scrubSecrets", () => {
  it("masks the whole URL and the bare password, also percent-decoded", () => {
    const url = "postgres://app:p%40ss-w0rd@db/books";
    assert.equal(scrubSecrets(`failed at ${url}: p@ss-w0rd rejected (p%40ss-w0rd)`, url), "failed at postgres://app:***@db/books: *** rejected (***)");
  });

  it("leaves text alone when the URL has no password", () => {
    assert.equal(scrubSecrets("relation app does not exist", "postgres://app@db/books"), "relation app does not exist");
  });
});
