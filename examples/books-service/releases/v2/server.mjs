// Release v2: same data, plus a display label; safe to run beside v1 on the same books file.
import { serve } from "../../lib/app.mjs";

serve({ release: "v2", shape: (b) => ({ id: b.id, title: b.title, author: b.author, label: `${b.title} by ${b.author || "unknown"}` }) });
