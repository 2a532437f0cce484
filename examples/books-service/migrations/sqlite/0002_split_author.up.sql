-- Expand: add the name columns beside author and fill them from it. Releases on schema 1 keep working.
ALTER TABLE books ADD COLUMN author_first TEXT NOT NULL DEFAULT '';
ALTER TABLE books ADD COLUMN author_last TEXT NOT NULL DEFAULT '';
UPDATE books SET
  author_first = CASE WHEN instr(author, ' ') > 0 THEN substr(author, 1, instr(author, ' ') - 1) ELSE author END,
  author_last = CASE WHEN instr(author, ' ') > 0 THEN substr(author, instr(author, ' ') + 1) ELSE '' END;
