-- Wallet accounts have no email or username, so users_view's columns become nullable. The view is
-- a projection: it is dropped, recreated and refilled from the event log (its checkpoint is
-- reset below), which is how every read-model change is migrated here.
DROP TABLE users_view;
CREATE TABLE users_view
(
    user_id       text NOT NULL PRIMARY KEY,
    email         text,
    username      text,
    -- "network:address" of the wallet that created the account, for wallet sign-ups.
    wallet        text,
    registered_at text NOT NULL
);
CREATE INDEX users_view_registered ON users_view (registered_at, user_id);
DELETE FROM checkpoints WHERE name = 'projection:users';

-- Wallets each account has connected. An unproven (unverified) wallet may be listed by several
-- accounts; only a verified one is claimed, by one account at most.
CREATE TABLE wallets_view
(
    user_id      text    NOT NULL,
    network      text    NOT NULL,
    address      text    NOT NULL,
    verified     integer NOT NULL,
    connected_at text    NOT NULL,
    verified_at  text,
    PRIMARY KEY (user_id, network, address)
);

CREATE TABLE admin_wallets_view
(
    wallet   text NOT NULL PRIMARY KEY,
    network  text NOT NULL,
    address  text NOT NULL,
    added_by text NOT NULL,
    added_at text NOT NULL
);
