-- turquoise: backfill table=books key=id batch=1000
-- Expand: add the name columns beside author, then fill them batch by batch, each batch a short
-- transaction, so reads and writes never queue behind one statement over the whole table.
-- Releases on schema 1 keep running meanwhile and write only author: the trigger fills the names
-- of what they write, so no row written during the backfill is missed.
ALTER TABLE books ADD COLUMN author_first TEXT NOT NULL DEFAULT '', ADD COLUMN author_last TEXT NOT NULL DEFAULT '';
CREATE FUNCTION books_author_split() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.author_first := CASE WHEN position(' ' IN NEW.author) > 0 THEN split_part(NEW.author, ' ', 1) ELSE NEW.author END;
  NEW.author_last := CASE WHEN position(' ' IN NEW.author) > 0 THEN substr(NEW.author, position(' ' IN NEW.author) + 1) ELSE '' END;
  RETURN NEW;
END $$;
CREATE TRIGGER books_author_split BEFORE INSERT OR UPDATE OF author ON books FOR EACH ROW EXECUTE FUNCTION books_author_split();
UPDATE books SET
  author_first = CASE WHEN position(' ' IN author) > 0 THEN split_part(author, ' ', 1) ELSE author END,
  author_last = CASE WHEN position(' ' IN author) > 0 THEN substr(author, position(' ' IN author) + 1) ELSE '' END
WHERE {batch};
