-- turquoise: contract
-- Contract: author is gone; only releases on schema 3 (and the turquoise release) run after this.
DROP TRIGGER IF EXISTS books_author_split ON books;
DROP FUNCTION IF EXISTS books_author_split();
DROP TRIGGER IF EXISTS books_author_join ON books;
DROP FUNCTION IF EXISTS books_author_join();
ALTER TABLE books DROP COLUMN author;
