-- Payments and the double-entry ledger, written only by the `payments` and `ledger`
-- projections. Money is stored as integer micro-USDT (exact on both engines; SQLite has no
-- decimal type) next to its canonical 6-decimal text.
CREATE TABLE payments_view
(
    payment_id           text    NOT NULL PRIMARY KEY,
    payer                text    NOT NULL,
    payment_type         text    NOT NULL,
    network              text    NOT NULL,
    amount               text    NOT NULL,
    reference            text    NOT NULL,
    pay_to               text    NOT NULL,
    status               text    NOT NULL,
    tx_hash              text,
    from_address         text,
    paid                 text,
    platform_fee         text,
    net                  text,
    fee_schedule_version integer,
    created_at           text    NOT NULL,
    confirmed_at         text
);
CREATE INDEX payments_view_by_payer ON payments_view (payer, created_at, payment_id);

-- Every posting, in log order. The sum of amount_micros over all rows is zero.
CREATE TABLE ledger_postings_view
(
    position      bigint  NOT NULL,
    idx           integer NOT NULL,
    payment_id    text    NOT NULL,
    account       text    NOT NULL,
    kind          text    NOT NULL,
    amount_micros bigint  NOT NULL,
    recorded_at   text    NOT NULL,
    PRIMARY KEY (position, idx)
);
CREATE INDEX ledger_postings_by_account ON ledger_postings_view (account, position, idx);

-- Each account's balance: the sum of its postings.
CREATE TABLE ledger_balances_view
(
    account        text   NOT NULL PRIMARY KEY,
    kind           text   NOT NULL,
    balance_micros bigint NOT NULL,
    postings       bigint NOT NULL
);
