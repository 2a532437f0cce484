// Release v1: books have a title and an author. Runs on schema 1.
import { serve } from "../../lib/app.mjs";
import { authorColumn } from "../../lib/schemas.mjs";

await serve({ release: "v1", shape: (b) => ({ id: b.id, title: b.title, author: b.author }), schema: authorColumn });
