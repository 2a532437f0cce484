ALTER TABLE books DROP COLUMN author_first, DROP COLUMN author_last;
