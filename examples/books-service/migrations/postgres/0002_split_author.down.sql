-- The names go, and with them whichever trigger kept them in step with author (0002 up made one,
-- 0003 down the other).
DROP TRIGGER IF EXISTS books_author_split ON books;
DROP FUNCTION IF EXISTS books_author_split();
DROP TRIGGER IF EXISTS books_author_join ON books;
DROP FUNCTION IF EXISTS books_author_join();
ALTER TABLE books DROP COLUMN author_first, DROP COLUMN author_last;
