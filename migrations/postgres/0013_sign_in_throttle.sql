-- Sign-in attempts per account and per client address, shared by every instance (the same
-- reasons as 0012: the database is what instances already share, and a row lock makes each
-- attempt count exactly once). Not events: a throttle decides nothing after the fact.
-- `subject` is `email:<sha256 of the normalized email>` (whether or not an account has it, so
-- the throttle tells no one whether an email exists) or `address:<ip>`. Rules and limits in
-- commands/src/sign_in_throttle.rs.
CREATE TABLE sign_in_attempts
(
    subject      text   NOT NULL PRIMARY KEY,
    window_start bigint NOT NULL, -- unix seconds, the app clock
    attempts     bigint NOT NULL
);
