-- turquoise: backfill table=books key=id batch=1000
-- Gives author back, rebuilt from the name columns batch by batch, so schema 2 readers see every
-- book. Releases on schema 3 keep running meanwhile and write only the names: the trigger fills
-- author for what they write.
ALTER TABLE books ADD COLUMN author TEXT NOT NULL DEFAULT '';
CREATE FUNCTION books_author_join() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.author := trim(NEW.author_first || ' ' || NEW.author_last);
  RETURN NEW;
END $$;
CREATE TRIGGER books_author_join BEFORE INSERT OR UPDATE OF author_first, author_last ON books FOR EACH ROW EXECUTE FUNCTION books_author_join();
UPDATE books SET author = trim(author_first || ' ' || author_last) WHERE {batch};
