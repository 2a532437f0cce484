ALTER TABLE books DROP COLUMN author_first;
ALTER TABLE books DROP COLUMN author_last;
