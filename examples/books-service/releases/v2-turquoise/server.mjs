// The turquoise release between v2 and v3: serves schema 1 (author), 2 (both) and 3 (first/last
// names), so the breaking migration can run while it is live, in either direction.
import { serve } from "../../lib/app.mjs";
import { bothShapes } from "../../lib/schemas.mjs";

await serve({ release: "v2-turquoise", shape: (b) => b, schema: bothShapes });
