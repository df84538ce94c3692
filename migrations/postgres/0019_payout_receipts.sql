-- The published Merkle receipt of each close's payouts (issue 21, `PayoutReceiptPublished`): one
-- row a month, copied from the event. `leaves` is the event's JSON list of
-- {payout_id, leaf: {payee, wallet, amount, month}} in payout id order, so a proof is built from
-- this row alone and always against the root that was published.
CREATE TABLE payout_receipts_view
(
    month        text    NOT NULL PRIMARY KEY,
    root         text    NOT NULL,
    leaves       text    NOT NULL,
    payouts      bigint  NOT NULL,
    published_at text    NOT NULL
);
