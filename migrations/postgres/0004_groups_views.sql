-- Groups and their members, written only by the `groups` projection (copied from group events).
CREATE TABLE groups_view
(
    group_id    text NOT NULL PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL,
    owner_id    text NOT NULL,
    created_at  text NOT NULL
);

CREATE TABLE group_members_view
(
    group_id  text NOT NULL,
    user_id   text NOT NULL,
    role      text NOT NULL,
    joined_at text NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
-- "my groups" looks members up by user.
CREATE INDEX group_members_by_user ON group_members_view (user_id, group_id);
