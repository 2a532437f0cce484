-- The names go, and with them whichever triggers kept them in step with author (0002 up made
-- one pair, 0003 down the other).
DROP TRIGGER IF EXISTS books_author_split_insert;
DROP TRIGGER IF EXISTS books_author_split_update;
DROP TRIGGER IF EXISTS books_author_join_insert;
DROP TRIGGER IF EXISTS books_author_join_update;
ALTER TABLE books DROP COLUMN author_first;
ALTER TABLE books DROP COLUMN author_last;
