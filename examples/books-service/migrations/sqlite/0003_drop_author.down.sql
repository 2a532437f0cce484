-- Gives author back, rebuilt from the name columns, so schema 2 readers see every book.
ALTER TABLE books ADD COLUMN author TEXT NOT NULL DEFAULT '';
UPDATE books SET author = trim(author_first || ' ' || author_last);
