-- Platform plans grant access (issue 15): whether a service is included in plans, shown on the
-- service's row. Every service created before the flag existed was not included.
ALTER TABLE services_view ADD COLUMN included_in_plans integer NOT NULL DEFAULT 0;

-- The web chat's conversations. Chat text is user content: it is NOT in the event log (which is
-- immutable and exported), only here, so deleting a conversation really deletes it. Metering
-- events carry a call's tokens, never its text (docs/ARCHITECTURE.md). Written and read only
-- by api/src/routes/conversations.rs; every query names the owner, so another user's id is
-- simply not found.
CREATE TABLE conversations
(
    id            text    NOT NULL PRIMARY KEY,
    user_id       text    NOT NULL,
    title         text    NOT NULL,
    model         text    NOT NULL,
    entitlement   text    NOT NULL, -- JSON: {"kind":"plan","plan":…} | {"kind":"subscription","subscription_id":…}
    system_prompt text,
    temperature   real,
    max_tokens    integer,
    created_at    text    NOT NULL, -- RFC 3339, the app clock
    updated_at    text    NOT NULL
) STRICT;
CREATE INDEX conversations_by_user ON conversations (user_id, updated_at);

-- Messages form a tree by parent_id (branches are siblings); seq orders them as written.
CREATE TABLE conversation_messages
(
    id              text    NOT NULL PRIMARY KEY,
    conversation_id text    NOT NULL,
    seq             integer NOT NULL,
    parent_id       text,
    role            text    NOT NULL, -- user | assistant
    content         text    NOT NULL,
    model           text,
    finish_reason   text,             -- stop | length | cancelled | error (assistant messages)
    error           text,             -- JSON {"code","message"} when finish_reason = error
    request_id      text,             -- the metered call (its receipt), for assistant messages
    created_at      text    NOT NULL
) STRICT;
CREATE INDEX conversation_messages_by_conversation ON conversation_messages (conversation_id, seq);
