-- Read model of accounts, written only by the `users` projection; every column comes from an
-- event so that a rebuild reproduces it byte for byte.
CREATE TABLE users_view
(
    user_id       text NOT NULL PRIMARY KEY,
    email         text NOT NULL,
    username      text NOT NULL,
    registered_at text NOT NULL
) STRICT;
CREATE INDEX users_view_registered ON users_view (registered_at, user_id);
