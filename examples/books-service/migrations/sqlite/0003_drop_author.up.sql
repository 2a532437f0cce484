-- turquoise: contract
-- Contract: author is gone; only releases on schema 3 (and the turquoise release) run after this.
DROP TRIGGER IF EXISTS books_author_split_insert;
DROP TRIGGER IF EXISTS books_author_split_update;
DROP TRIGGER IF EXISTS books_author_join_insert;
DROP TRIGGER IF EXISTS books_author_join_update;
ALTER TABLE books DROP COLUMN author;
