// Release v2: same data, plus a display label; runs beside v1 on the same schema (a flip-only deploy).
import { serve } from "../../lib/app.mjs";
import { authorColumn } from "../../lib/schemas.mjs";

const label = (b) => ({ ...b, label: `${b.title} by ${b.author || "unknown"}` });
await serve({
  release: "v2",
  shape: (b) => label({ id: b.id, title: b.title, author: b.author }),
  schema: { read: async (db, limit) => (await authorColumn.read(db, limit)).map(label), write: async (tx, b) => label(await authorColumn.write(tx, b)) },
});
