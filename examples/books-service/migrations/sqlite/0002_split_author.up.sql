-- turquoise: backfill table=books key=id batch=1000
-- Expand: add the name columns beside author, then fill them batch by batch, each batch a short
-- transaction, so writers never wait behind one statement over the whole table.
-- Releases on schema 1 keep running meanwhile and write only author: the triggers fill the names
-- of what they write, so no row written during the backfill is missed.
ALTER TABLE books ADD COLUMN author_first TEXT NOT NULL DEFAULT '';
ALTER TABLE books ADD COLUMN author_last TEXT NOT NULL DEFAULT '';
CREATE TRIGGER books_author_split_insert AFTER INSERT ON books BEGIN
  UPDATE books SET
    author_first = CASE WHEN instr(NEW.author, ' ') > 0 THEN substr(NEW.author, 1, instr(NEW.author, ' ') - 1) ELSE NEW.author END,
    author_last = CASE WHEN instr(NEW.author, ' ') > 0 THEN substr(NEW.author, instr(NEW.author, ' ') + 1) ELSE '' END
  WHERE id = NEW.id;
END;
CREATE TRIGGER books_author_split_update AFTER UPDATE OF author ON books BEGIN
  UPDATE books SET
    author_first = CASE WHEN instr(NEW.author, ' ') > 0 THEN substr(NEW.author, 1, instr(NEW.author, ' ') - 1) ELSE NEW.author END,
    author_last = CASE WHEN instr(NEW.author, ' ') > 0 THEN substr(NEW.author, instr(NEW.author, ' ') + 1) ELSE '' END
  WHERE id = NEW.id;
END;
UPDATE books SET
  author_first = CASE WHEN instr(author, ' ') > 0 THEN substr(author, 1, instr(author, ' ') - 1) ELSE author END,
  author_last = CASE WHEN instr(author, ' ') > 0 THEN substr(author, instr(author, ' ') + 1) ELSE '' END
WHERE {batch};
