-- Sign-in attempts per account and per client address (see the PostgreSQL migration of the
-- same number; rules and limits in commands/src/sign_in_throttle.rs).
CREATE TABLE sign_in_attempts
(
    subject      text    NOT NULL PRIMARY KEY,
    window_start integer NOT NULL,
    attempts     integer NOT NULL
) STRICT;
