// Release v1: books have a title and an author.
import { serve } from "../../lib/app.mjs";

serve({ release: "v1", shape: (b) => ({ id: b.id, title: b.title, author: b.author }) });
