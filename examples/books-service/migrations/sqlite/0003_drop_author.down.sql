-- turquoise: backfill table=books key=id batch=1000
-- Gives author back, rebuilt from the name columns batch by batch, so schema 2 readers see every
-- book. Releases on schema 3 keep running meanwhile and write only the names: the triggers fill
-- author for what they write.
ALTER TABLE books ADD COLUMN author TEXT NOT NULL DEFAULT '';
CREATE TRIGGER books_author_join_insert AFTER INSERT ON books BEGIN
  UPDATE books SET author = trim(NEW.author_first || ' ' || NEW.author_last) WHERE id = NEW.id;
END;
CREATE TRIGGER books_author_join_update AFTER UPDATE OF author_first, author_last ON books BEGIN
  UPDATE books SET author = trim(NEW.author_first || ' ' || NEW.author_last) WHERE id = NEW.id;
END;
UPDATE books SET author = trim(author_first || ' ' || author_last) WHERE {batch};
