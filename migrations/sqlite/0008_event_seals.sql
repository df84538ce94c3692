-- The tamper-evident hash chain over the event log, written only by the `seals` projection:
-- row n seals the n-th event in global log order as sha256(seal of n-1 || canonical event)
-- (hex; the seal before the first event is 32 zero bytes). `aiforge audit verify` recomputes
-- the chain from the events as stored and names the first position whose seal differs.
CREATE TABLE event_seals
(
    seq      integer NOT NULL PRIMARY KEY,
    position integer NOT NULL,
    seal     text    NOT NULL
) STRICT;
