-- Read model of accounts, written only by the `users` projection. Every column is copied from an
-- event, never defaulted by the database, so a rebuild reproduces the table byte for byte.
CREATE TABLE users_view
(
    user_id       text NOT NULL PRIMARY KEY,
    email         text NOT NULL,
    username      text NOT NULL,
    registered_at text NOT NULL
);
CREATE INDEX users_view_registered ON users_view (registered_at, user_id);
