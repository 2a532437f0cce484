-- turquoise: contract
-- Contract: author is gone; only releases on schema 3 (and the turquoise release) run after this.
ALTER TABLE books DROP COLUMN author;
