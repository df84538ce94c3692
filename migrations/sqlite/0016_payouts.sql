-- Money out (issue 21). A creator's payout wallet per network: the one verified wallet their
-- payouts on that network go to (`PayoutWalletChosen`); 1 on that row, 0 on the others.
ALTER TABLE wallets_view ADD COLUMN payout integer NOT NULL DEFAULT 0;

-- Payouts (`aiforge_domain::payout`): one row each, copied from the `Payout` events. `payable`
-- is the ledger account paid (`creator_payable:<user>`, `node_payable:<node>`); `reason` why it
-- waits (hot wallet short of USDT or gas), was cancelled or failed.
CREATE TABLE payouts_view
(
    payout_id     text    NOT NULL PRIMARY KEY,
    payable       text    NOT NULL,
    user_id       text    NOT NULL,
    network       text    NOT NULL,
    address       text    NOT NULL,
    amount_micros bigint  NOT NULL,
    month         text,
    state         text    NOT NULL,
    tx_hash       text,
    nonce         bigint,
    reason        text,
    requested_at  text    NOT NULL,
    updated_at    text    NOT NULL
);
CREATE INDEX payouts_view_payable ON payouts_view (payable);
CREATE INDEX payouts_view_user ON payouts_view (user_id);
CREATE INDEX payouts_view_state ON payouts_view (state);
