// Release v3: authors are stored as first and last name; runs on schema 3 only.
import { serve } from "../../lib/app.mjs";
import { nameColumns } from "../../lib/schemas.mjs";

await serve({ release: "v3", shape: (b) => b, schema: nameColumns });
