-- Expand: add the name columns beside author and fill them from it. Releases on schema 1 keep working.
ALTER TABLE books ADD COLUMN author_first TEXT NOT NULL DEFAULT '', ADD COLUMN author_last TEXT NOT NULL DEFAULT '';
UPDATE books SET
  author_first = CASE WHEN position(' ' IN author) > 0 THEN split_part(author, ' ', 1) ELSE author END,
  author_last = CASE WHEN position(' ' IN author) > 0 THEN substr(author, position(' ' IN author) + 1) ELSE '' END;
