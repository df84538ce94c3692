//! The `Group` aggregate: creators who collaborate, own models together and split revenue. It
//! keeps the member list with each member's role and decides, through one permission matrix
//! ([`can`]), who may change that list and who may act for the group. Later aggregates (models,
//! revenue splits) ask the same matrix through [`Group::may`] rather than restating the rules.
//!
//! Invariant: a created group has exactly one OWNER. No role may grant, change or revoke OWNER
//! through membership commands; ownership moves only by `TransferOwnership`.
//!
//! Ids and times come in the commands from the application layer; nothing here reads a clock.

use std::collections::BTreeMap;
use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const NAME_CHARS_MIN: usize = 1;
pub const NAME_CHARS_MAX: usize = 100;
pub const DESCRIPTION_CHARS_MAX: usize = 2000;
/// Every command replays the whole member list; a cap keeps a group loadable in microseconds.
pub const MEMBERS_MAX: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    /// This role's row of the permission matrix.
    pub const fn permissions(self) -> Permissions {
        match self {
            Role::Owner => OWNER_MAY,
            Role::Admin => ADMIN_MAY,
            Role::Member => MEMBER_MAY,
            Role::Viewer => VIEWER_MAY,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "OWNER",
            Role::Admin => "ADMIN",
            Role::Member => "MEMBER",
            Role::Viewer => "VIEWER",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a member may try to do in or to a group. Membership actions name the roles they
/// touch, because who may act depends on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupAction {
    View,
    /// Add a new member with `role`.
    AddMember {
        role: Role,
    },
    /// Change a member whose role is `from` to `to`.
    ChangeRole {
        from: Role,
        to: Role,
    },
    /// Remove a member whose role is `role`.
    RemoveMember {
        role: Role,
    },
    TransferOwnership,
    UploadModel,
    ConfigureRevenueSplit,
    /// Ask for a group model's distribution of a closed month.
    DistributeRevenue,
    Leave,
}

impl fmt::Display for GroupAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupAction::View => write!(f, "view the group"),
            GroupAction::AddMember { role } => write!(f, "add a member as {role}"),
            GroupAction::ChangeRole { from, to } => {
                write!(f, "change a member's role from {from} to {to}")
            }
            GroupAction::RemoveMember { role } => write!(f, "remove a member who is {role}"),
            GroupAction::TransferOwnership => write!(f, "transfer ownership"),
            GroupAction::UploadModel => write!(f, "upload a model to the group"),
            GroupAction::ConfigureRevenueSplit => write!(f, "configure the group's revenue split"),
            GroupAction::DistributeRevenue => write!(f, "distribute a group model's revenue"),
            GroupAction::Leave => write!(f, "leave the group"),
        }
    }
}

/// One row of the permission matrix: what a member with one role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// The roles this role may add members as, change members from and to, and remove members
    /// of. OWNER is in no row: ownership moves only by `TransferOwnership`, so a group can never
    /// gain a second owner or lose its only one.
    pub manages: &'static [Role],
    pub transfer_ownership: bool,
    pub upload_model: bool,
    pub configure_revenue_split: bool,
    pub distribute_revenue: bool,
    pub view: bool,
    /// The owner may not leave: a group without an owner would have no one to manage it.
    pub leave: bool,
}

impl Permissions {
    pub fn manages(&self, role: Role) -> bool {
        self.manages.contains(&role)
    }
}

const OWNER_MAY: Permissions = Permissions {
    manages: &[Role::Admin, Role::Member, Role::Viewer],
    transfer_ownership: true,
    upload_model: true,
    configure_revenue_split: true,
    distribute_revenue: true,
    view: true,
    leave: false,
};
const ADMIN_MAY: Permissions = Permissions {
    manages: &[Role::Member, Role::Viewer],
    transfer_ownership: false,
    upload_model: true,
    configure_revenue_split: true,
    distribute_revenue: true,
    view: true,
    leave: true,
};
const MEMBER_MAY: Permissions = Permissions {
    manages: &[],
    transfer_ownership: false,
    upload_model: true,
    configure_revenue_split: false,
    distribute_revenue: false,
    view: true,
    leave: true,
};
const VIEWER_MAY: Permissions = Permissions {
    manages: &[],
    transfer_ownership: false,
    upload_model: false,
    configure_revenue_split: false,
    distribute_revenue: false,
    view: true,
    leave: true,
};

/// Whether a member with role `actor` may do `action`. The matrix (rows `OWNER_MAY` ..
/// `VIEWER_MAY` above; `the_permission_matrix_is_as_documented` checks every cell of this table):
///
/// | action                                         | OWNER | ADMIN | MEMBER | VIEWER |
/// |------------------------------------------------|:-----:|:-----:|:------:|:------:|
/// | view the group                                 |  yes  |  yes  |  yes   |  yes   |
/// | add a member as ADMIN                          |  yes  |  no   |  no    |  no    |
/// | add a member as MEMBER or VIEWER               |  yes  |  yes  |  no    |  no    |
/// | add a member as OWNER                          |  no   |  no   |  no    |  no    |
/// | change a role between MEMBER and VIEWER        |  yes  |  yes  |  no    |  no    |
/// | change a role from or to ADMIN (not OWNER)     |  yes  |  no   |  no    |  no    |
/// | change a role from or to OWNER                 |  no   |  no   |  no    |  no    |
/// | remove a MEMBER or VIEWER                      |  yes  |  yes  |  no    |  no    |
/// | remove an ADMIN                                |  yes  |  no   |  no    |  no    |
/// | remove the OWNER                               |  no   |  no   |  no    |  no    |
/// | transfer ownership (to a current member)       |  yes  |  no   |  no    |  no    |
/// | upload a model to the group                    |  yes  |  yes  |  yes   |  no    |
/// | configure the group's revenue split            |  yes  |  yes  |  no    |  no    |
/// | distribute a group model's revenue             |  yes  |  yes  |  no    |  no    |
/// | leave the group                                |  no¹  |  yes  |  yes   |  yes   |
///
/// ¹ The owner must transfer ownership first; the old owner then becomes an ADMIN.
///
/// Outsiders (not members) may do nothing; that is checked against the member list, not here.
pub fn can(actor: Role, action: GroupAction) -> bool {
    let may = actor.permissions();
    match action {
        GroupAction::View => may.view,
        GroupAction::AddMember { role } => may.manages(role),
        GroupAction::ChangeRole { from, to } => may.manages(from) && may.manages(to),
        GroupAction::RemoveMember { role } => may.manages(role),
        GroupAction::TransferOwnership => may.transfer_ownership,
        GroupAction::UploadModel => may.upload_model,
        GroupAction::ConfigureRevenueSplit => may.configure_revenue_split,
        GroupAction::DistributeRevenue => may.distribute_revenue,
        GroupAction::Leave => may.leave,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("name must be {NAME_CHARS_MIN}-{NAME_CHARS_MAX} characters")]
    InvalidName,
    #[error("description must be at most {DESCRIPTION_CHARS_MAX} characters")]
    DescriptionTooLong,
    #[error("this group already exists")]
    AlreadyCreated,
    #[error("no such group")]
    NotFound,
    #[error("{actor} is not a member of this group")]
    ActorNotAMember { actor: String },
    #[error("{user_id} is not a member of this group")]
    NotAMember { user_id: String },
    #[error("{user_id} is already a member of this group")]
    AlreadyAMember { user_id: String },
    #[error("a group has at most {MEMBERS_MAX} members")]
    GroupFull,
    #[error("{role} may not {action}")]
    Forbidden { role: Role, action: GroupAction },
    #[error("the owner cannot leave the group; transfer ownership first")]
    OwnerCannotLeave,
    #[error("{user_id} already has the role {role}")]
    RoleUnchanged { user_id: String, role: Role },
    #[error("{user_id} already owns this group")]
    AlreadyTheOwner { user_id: String },
}

impl GroupError {
    /// The request field a validation error is about, for a 422 that names it.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            GroupError::InvalidName => Some("name"),
            GroupError::DescriptionTooLong => Some("description"),
            GroupError::AlreadyCreated
            | GroupError::NotFound
            | GroupError::ActorNotAMember { .. }
            | GroupError::NotAMember { .. }
            | GroupError::AlreadyAMember { .. }
            | GroupError::GroupFull
            | GroupError::Forbidden { .. }
            | GroupError::OwnerCannotLeave
            | GroupError::RoleUnchanged { .. }
            | GroupError::AlreadyTheOwner { .. } => None,
        }
    }
}

/// Returns the name as stored: trimmed, 1-100 characters.
pub fn validate_name(name: &str) -> Result<String, GroupError> {
    crate::trimmed_within(name, NAME_CHARS_MIN..=NAME_CHARS_MAX).ok_or(GroupError::InvalidName)
}

/// Returns the description as stored: trimmed, at most 2000 characters (empty is allowed).
pub fn validate_description(description: &str) -> Result<String, GroupError> {
    crate::trimmed_within(description, 0..=DESCRIPTION_CHARS_MAX)
        .ok_or(GroupError::DescriptionTooLong)
}

/// Every command names its acting user (`actor`, already authenticated by the application
/// layer) and its time `at` from the application's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// `group_id` is the aggregate id (a UUIDv7 made by the application layer); it travels in
    /// the command so the first event can carry it. The creator becomes the owner.
    Create {
        group_id: String,
        name: String,
        description: String,
        owner: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    AddMember {
        actor: String,
        user_id: String,
        role: Role,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    ChangeRole {
        actor: String,
        user_id: String,
        role: Role,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    RemoveMember {
        actor: String,
        user_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Leave {
        actor: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// `new_owner` must already be a member; the old owner stays on as an ADMIN.
    TransferOwnership {
        actor: String,
        new_owner: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupEvent {
    /// The owner is a member with role OWNER from this event on.
    GroupCreated {
        group_id: String,
        name: String,
        description: String,
        owner_id: String,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    MemberAdded {
        user_id: String,
        role: Role,
        added_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    MemberRoleChanged {
        user_id: String,
        from: Role,
        to: Role,
        changed_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    MemberRemoved {
        user_id: String,
        removed_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    MemberLeft {
        user_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// `to` becomes the OWNER. `former_owner_role` is the role `from` keeps (ADMIN today): it is
    /// in the event so that neither `apply` nor projections restate that rule, and a later
    /// change of the rule does not change how old events read.
    OwnershipTransferred {
        from: String,
        to: String,
        former_owner_role: Role,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for GroupEvent {
    fn event_type(&self) -> String {
        match self {
            GroupEvent::GroupCreated { .. } => "GroupCreated".to_string(),
            GroupEvent::MemberAdded { .. } => "MemberAdded".to_string(),
            GroupEvent::MemberRoleChanged { .. } => "MemberRoleChanged".to_string(),
            GroupEvent::MemberRemoved { .. } => "MemberRemoved".to_string(),
            GroupEvent::MemberLeft { .. } => "MemberLeft".to_string(),
            GroupEvent::OwnershipTransferred { .. } => "OwnershipTransferred".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub group_id: Option<String>,
    pub name: String,
    pub description: String,
    pub owner_id: Option<String>,
    /// user id -> role; the owner is in it with role OWNER. Ordered so snapshots are canonical.
    pub members: BTreeMap<String, Role>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub created_at: Option<OffsetDateTime>,
}

impl Group {
    pub fn is_created(&self) -> bool {
        self.group_id.is_some()
    }

    pub fn role_of(&self, user_id: &str) -> Option<Role> {
        self.members.get(user_id).copied()
    }

    /// Whether `user_id` may do `action` in this group; never for a non-member. Other aggregates
    /// (models, revenue splits) ask this before acting for the group.
    pub fn may(&self, user_id: &str, action: GroupAction) -> bool {
        self.role_of(user_id).is_some_and(|role| can(role, action))
    }

    pub fn may_upload_model(&self, user_id: &str) -> bool {
        self.may(user_id, GroupAction::UploadModel)
    }

    pub fn may_configure_revenue_split(&self, user_id: &str) -> bool {
        self.may(user_id, GroupAction::ConfigureRevenueSplit)
    }

    /// The acting user's role, after checking the group exists and the actor belongs to it.
    fn actor_role(&self, actor: &str) -> Result<Role, GroupError> {
        if !self.is_created() {
            return Err(GroupError::NotFound);
        }
        self.role_of(actor)
            .ok_or_else(|| GroupError::ActorNotAMember {
                actor: actor.to_string(),
            })
    }

    fn member_role(&self, user_id: &str) -> Result<Role, GroupError> {
        self.role_of(user_id).ok_or_else(|| GroupError::NotAMember {
            user_id: user_id.to_string(),
        })
    }
}

fn require(role: Role, action: GroupAction) -> Result<(), GroupError> {
    if can(role, action) {
        Ok(())
    } else {
        Err(GroupError::Forbidden { role, action })
    }
}

/// A group decides from its own history alone; no external facts are needed.
pub struct GroupServices;

impl Aggregate for Group {
    const TYPE: &'static str = "group";
    type Command = GroupCommand;
    type Event = GroupEvent;
    type Error = GroupError;
    type Services = GroupServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            GroupEvent::GroupCreated {
                group_id,
                name,
                description,
                owner_id,
                created_at,
            } => {
                self.group_id = Some(group_id);
                self.name = name;
                self.description = description;
                self.members.insert(owner_id.clone(), Role::Owner);
                self.owner_id = Some(owner_id);
                self.created_at = Some(created_at);
            }
            GroupEvent::MemberAdded { user_id, role, .. } => {
                self.members.insert(user_id, role);
            }
            GroupEvent::MemberRoleChanged { user_id, to, .. } => {
                self.members.insert(user_id, to);
            }
            GroupEvent::MemberRemoved { user_id, .. } | GroupEvent::MemberLeft { user_id, .. } => {
                self.members.remove(&user_id);
            }
            GroupEvent::OwnershipTransferred {
                from,
                to,
                former_owner_role,
                ..
            } => {
                self.members.insert(from, former_owner_role);
                self.members.insert(to.clone(), Role::Owner);
                self.owner_id = Some(to);
            }
        }
    }
}

impl Group {
    /// Every command yields exactly one event or an error; all checks happen before it is
    /// written, so a rejected command leaves the aggregate untouched.
    fn decide(&self, command: GroupCommand) -> Result<GroupEvent, GroupError> {
        match command {
            GroupCommand::Create {
                group_id,
                name,
                description,
                owner,
                at,
            } => {
                if self.is_created() {
                    return Err(GroupError::AlreadyCreated);
                }
                Ok(GroupEvent::GroupCreated {
                    group_id,
                    name: validate_name(&name)?,
                    description: validate_description(&description)?,
                    owner_id: owner,
                    created_at: at,
                })
            }
            GroupCommand::AddMember {
                actor,
                user_id,
                role,
                at,
            } => {
                let actor_role = self.actor_role(&actor)?;
                require(actor_role, GroupAction::AddMember { role })?;
                if self.members.contains_key(&user_id) {
                    return Err(GroupError::AlreadyAMember { user_id });
                }
                if self.members.len() >= MEMBERS_MAX {
                    return Err(GroupError::GroupFull);
                }
                Ok(GroupEvent::MemberAdded {
                    user_id,
                    role,
                    added_by: actor,
                    at,
                })
            }
            GroupCommand::ChangeRole {
                actor,
                user_id,
                role,
                at,
            } => {
                let actor_role = self.actor_role(&actor)?;
                let from = self.member_role(&user_id)?;
                require(actor_role, GroupAction::ChangeRole { from, to: role })?;
                if from == role {
                    return Err(GroupError::RoleUnchanged { user_id, role });
                }
                Ok(GroupEvent::MemberRoleChanged {
                    user_id,
                    from,
                    to: role,
                    changed_by: actor,
                    at,
                })
            }
            GroupCommand::RemoveMember { actor, user_id, at } => {
                let actor_role = self.actor_role(&actor)?;
                let role = self.member_role(&user_id)?;
                require(actor_role, GroupAction::RemoveMember { role })?;
                Ok(GroupEvent::MemberRemoved {
                    user_id,
                    removed_by: actor,
                    at,
                })
            }
            GroupCommand::Leave { actor, at } => {
                let actor_role = self.actor_role(&actor)?;
                if !can(actor_role, GroupAction::Leave) {
                    // The only role that may not leave is the owner; say what to do instead.
                    return Err(if actor_role == Role::Owner {
                        GroupError::OwnerCannotLeave
                    } else {
                        GroupError::Forbidden {
                            role: actor_role,
                            action: GroupAction::Leave,
                        }
                    });
                }
                Ok(GroupEvent::MemberLeft { user_id: actor, at })
            }
            GroupCommand::TransferOwnership {
                actor,
                new_owner,
                at,
            } => {
                let actor_role = self.actor_role(&actor)?;
                require(actor_role, GroupAction::TransferOwnership)?;
                if new_owner == actor {
                    return Err(GroupError::AlreadyTheOwner { user_id: new_owner });
                }
                self.member_role(&new_owner)?;
                Ok(GroupEvent::OwnershipTransferred {
                    from: actor,
                    to: new_owner,
                    former_owner_role: Role::Admin,
                    at,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use proptest::prelude::*;
    use time::macros::datetime;

    type GroupTest = TestFramework<Group>;

    const AT: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    fn created() -> GroupEvent {
        GroupEvent::GroupCreated {
            group_id: "g1".into(),
            name: "Llama Tuners".into(),
            description: "We fine-tune small models.".into(),
            owner_id: "owner".into(),
            created_at: AT,
        }
    }

    fn added(user_id: &str, role: Role) -> GroupEvent {
        GroupEvent::MemberAdded {
            user_id: user_id.into(),
            role,
            added_by: "owner".into(),
            at: AT,
        }
    }

    /// A group with one member of each role: owner, admin, admin2, member, viewer.
    fn populated() -> Vec<GroupEvent> {
        vec![
            created(),
            added("admin", Role::Admin),
            added("admin2", Role::Admin),
            added("member", Role::Member),
            added("viewer", Role::Viewer),
        ]
    }

    fn group_from(events: Vec<GroupEvent>) -> Group {
        let mut group = Group::default();
        for event in events {
            group.apply(event);
        }
        group
    }

    fn create(name: &str, description: &str) -> GroupCommand {
        GroupCommand::Create {
            group_id: "g1".into(),
            name: name.into(),
            description: description.into(),
            owner: "owner".into(),
            at: AT,
        }
    }

    fn add(actor: &str, user_id: &str, role: Role) -> GroupCommand {
        GroupCommand::AddMember {
            actor: actor.into(),
            user_id: user_id.into(),
            role,
            at: AT,
        }
    }

    fn change(actor: &str, user_id: &str, role: Role) -> GroupCommand {
        GroupCommand::ChangeRole {
            actor: actor.into(),
            user_id: user_id.into(),
            role,
            at: AT,
        }
    }

    fn remove(actor: &str, user_id: &str) -> GroupCommand {
        GroupCommand::RemoveMember {
            actor: actor.into(),
            user_id: user_id.into(),
            at: AT,
        }
    }

    fn leave(actor: &str) -> GroupCommand {
        GroupCommand::Leave {
            actor: actor.into(),
            at: AT,
        }
    }

    fn transfer(actor: &str, new_owner: &str) -> GroupCommand {
        GroupCommand::TransferOwnership {
            actor: actor.into(),
            new_owner: new_owner.into(),
            at: AT,
        }
    }

    fn forbidden(role: Role, action: GroupAction) -> GroupError {
        GroupError::Forbidden { role, action }
    }

    fn role_changed(user_id: &str, from: Role, to: Role, by: &str) -> GroupEvent {
        GroupEvent::MemberRoleChanged {
            user_id: user_id.into(),
            from,
            to,
            changed_by: by.into(),
            at: AT,
        }
    }

    fn removed(user_id: &str, by: &str) -> GroupEvent {
        GroupEvent::MemberRemoved {
            user_id: user_id.into(),
            removed_by: by.into(),
            at: AT,
        }
    }

    // Creation and validation

    #[test]
    fn creating_a_group_makes_the_creator_its_owner_and_stores_the_trimmed_name() {
        GroupTest::with(GroupServices)
            .given_no_previous_events()
            .when(create("  Llama Tuners  ", " We fine-tune small models.\n"))
            .then_expect_events(vec![created()]);
        let group = group_from(vec![created()]);
        assert_eq!(group.role_of("owner"), Some(Role::Owner));
        assert_eq!(group.owner_id.as_deref(), Some("owner"));
        assert_eq!(group.members.len(), 1);
    }

    #[test]
    fn creating_a_group_twice_is_rejected() {
        GroupTest::with(GroupServices)
            .given(vec![created()])
            .when(create("Another", ""))
            .then_expect_error(GroupError::AlreadyCreated);
    }

    #[test]
    fn a_blank_or_overlong_name_is_rejected_and_names_the_field() {
        for bad in ["", "   ", &"n".repeat(NAME_CHARS_MAX + 1)] {
            GroupTest::with(GroupServices)
                .given_no_previous_events()
                .when(create(bad, ""))
                .then_expect_error(GroupError::InvalidName);
        }
        assert_eq!(GroupError::InvalidName.field(), Some("name"));
        // Characters, not bytes: 100 multi-byte characters are a valid name.
        assert!(validate_name(&"é".repeat(NAME_CHARS_MAX)).is_ok());
        assert!(validate_name("x").is_ok());
    }

    #[test]
    fn an_overlong_description_is_rejected_and_names_the_field() {
        GroupTest::with(GroupServices)
            .given_no_previous_events()
            .when(create(
                "Llama Tuners",
                &"d".repeat(DESCRIPTION_CHARS_MAX + 1),
            ))
            .then_expect_error(GroupError::DescriptionTooLong);
        assert_eq!(GroupError::DescriptionTooLong.field(), Some("description"));
        assert!(validate_description(&"d".repeat(DESCRIPTION_CHARS_MAX)).is_ok());
        assert!(validate_description("").is_ok());
    }

    #[test]
    fn commands_on_a_group_that_does_not_exist_are_rejected() {
        for command in [
            add("owner", "bob", Role::Member),
            change("owner", "bob", Role::Member),
            remove("owner", "bob"),
            leave("owner"),
            transfer("owner", "bob"),
        ] {
            GroupTest::with(GroupServices)
                .given_no_previous_events()
                .when(command)
                .then_expect_error(GroupError::NotFound);
        }
    }

    #[test]
    fn a_non_member_cannot_act_on_the_group() {
        let not_a_member = GroupError::ActorNotAMember {
            actor: "mallory".into(),
        };
        for command in [
            add("mallory", "bob", Role::Viewer),
            change("mallory", "member", Role::Viewer),
            remove("mallory", "member"),
            leave("mallory"),
            transfer("mallory", "member"),
        ] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(command)
                .then_expect_error(not_a_member.clone());
        }
        assert_eq!(not_a_member.field(), None);
    }

    #[test]
    fn adding_an_existing_member_is_rejected() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(add("owner", "viewer", Role::Member))
            .then_expect_error(GroupError::AlreadyAMember {
                user_id: "viewer".into(),
            });
    }

    #[test]
    fn changing_or_removing_a_non_member_is_rejected() {
        let unknown = GroupError::NotAMember {
            user_id: "bob".into(),
        };
        for command in [change("owner", "bob", Role::Member), remove("owner", "bob")] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(command)
                .then_expect_error(unknown.clone());
        }
    }

    #[test]
    fn changing_a_role_to_the_role_it_already_is_is_rejected() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("owner", "member", Role::Member))
            .then_expect_error(GroupError::RoleUnchanged {
                user_id: "member".into(),
                role: Role::Member,
            });
    }

    #[test]
    fn a_group_cannot_grow_past_its_member_limit() {
        let mut events = vec![created()];
        events.extend((1..MEMBERS_MAX).map(|n| added(&format!("user-{n}"), Role::Viewer)));
        GroupTest::with(GroupServices)
            .given(events.clone())
            .when(add("owner", "one-too-many", Role::Viewer))
            .then_expect_error(GroupError::GroupFull);
        // One below the limit there is room for exactly one more.
        events.pop();
        GroupTest::with(GroupServices)
            .given(events)
            .when(add("owner", "last", Role::Viewer))
            .then_expect_events(vec![added("last", Role::Viewer)]);
    }

    // OWNER

    #[test]
    fn the_owner_may_add_admins_members_and_viewers() {
        for role in [Role::Admin, Role::Member, Role::Viewer] {
            GroupTest::with(GroupServices)
                .given(vec![created()])
                .when(add("owner", "bob", role))
                .then_expect_events(vec![added("bob", role)]);
        }
    }

    #[test]
    fn nobody_may_add_a_second_owner() {
        for (actor, role) in [
            ("owner", Role::Owner),
            ("admin", Role::Admin),
            ("member", Role::Member),
            ("viewer", Role::Viewer),
        ] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(add(actor, "bob", Role::Owner))
                .then_expect_error(forbidden(
                    role,
                    GroupAction::AddMember { role: Role::Owner },
                ));
        }
    }

    #[test]
    fn the_owner_cannot_make_a_member_owner_by_changing_roles() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("owner", "admin", Role::Owner))
            .then_expect_error(forbidden(
                Role::Owner,
                GroupAction::ChangeRole {
                    from: Role::Admin,
                    to: Role::Owner,
                },
            ));
    }

    #[test]
    fn the_owner_cannot_demote_itself() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("owner", "owner", Role::Admin))
            .then_expect_error(forbidden(
                Role::Owner,
                GroupAction::ChangeRole {
                    from: Role::Owner,
                    to: Role::Admin,
                },
            ));
    }

    #[test]
    fn the_owner_may_promote_a_member_to_admin_and_demote_an_admin() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("owner", "member", Role::Admin))
            .then_expect_events(vec![role_changed(
                "member",
                Role::Member,
                Role::Admin,
                "owner",
            )]);
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("owner", "admin", Role::Viewer))
            .then_expect_events(vec![role_changed(
                "admin",
                Role::Admin,
                Role::Viewer,
                "owner",
            )]);
    }

    #[test]
    fn the_owner_may_remove_admins_members_and_viewers() {
        for user in ["admin", "member", "viewer"] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(remove("owner", user))
                .then_expect_events(vec![removed(user, "owner")]);
        }
    }

    #[test]
    fn nobody_may_remove_the_owner_not_even_the_owner() {
        for (actor, role) in [
            ("owner", Role::Owner),
            ("admin", Role::Admin),
            ("member", Role::Member),
            ("viewer", Role::Viewer),
        ] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(remove(actor, "owner"))
                .then_expect_error(forbidden(
                    role,
                    GroupAction::RemoveMember { role: Role::Owner },
                ));
        }
    }

    #[test]
    fn the_owner_cannot_leave_without_transferring() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(leave("owner"))
            .then_expect_error(GroupError::OwnerCannotLeave);
    }

    // ADMIN

    #[test]
    fn an_admin_may_add_members_and_viewers() {
        for role in [Role::Member, Role::Viewer] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(add("admin", "bob", role))
                .then_expect_events(vec![GroupEvent::MemberAdded {
                    user_id: "bob".into(),
                    role,
                    added_by: "admin".into(),
                    at: AT,
                }]);
        }
    }

    #[test]
    fn an_admin_cannot_grant_admin() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(add("admin", "bob", Role::Admin))
            .then_expect_error(forbidden(
                Role::Admin,
                GroupAction::AddMember { role: Role::Admin },
            ));
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("admin", "member", Role::Admin))
            .then_expect_error(forbidden(
                Role::Admin,
                GroupAction::ChangeRole {
                    from: Role::Member,
                    to: Role::Admin,
                },
            ));
    }

    #[test]
    fn an_admin_may_change_a_member_to_viewer_and_back() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("admin", "member", Role::Viewer))
            .then_expect_events(vec![role_changed(
                "member",
                Role::Member,
                Role::Viewer,
                "admin",
            )]);
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("admin", "viewer", Role::Member))
            .then_expect_events(vec![role_changed(
                "viewer",
                Role::Viewer,
                Role::Member,
                "admin",
            )]);
    }

    #[test]
    fn an_admin_cannot_change_the_role_of_another_admin_or_itself() {
        for target in ["admin2", "admin"] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(change("admin", target, Role::Member))
                .then_expect_error(forbidden(
                    Role::Admin,
                    GroupAction::ChangeRole {
                        from: Role::Admin,
                        to: Role::Member,
                    },
                ));
        }
    }

    #[test]
    fn an_admin_cannot_change_the_owners_role() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("admin", "owner", Role::Viewer))
            .then_expect_error(forbidden(
                Role::Admin,
                GroupAction::ChangeRole {
                    from: Role::Owner,
                    to: Role::Viewer,
                },
            ));
    }

    #[test]
    fn an_admin_may_remove_members_and_viewers() {
        for user in ["member", "viewer"] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(remove("admin", user))
                .then_expect_events(vec![removed(user, "admin")]);
        }
    }

    #[test]
    fn an_admin_cannot_remove_another_admin() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(remove("admin", "admin2"))
            .then_expect_error(forbidden(
                Role::Admin,
                GroupAction::RemoveMember { role: Role::Admin },
            ));
    }

    #[test]
    fn an_admin_cannot_remove_the_owner() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(remove("admin", "owner"))
            .then_expect_error(forbidden(
                Role::Admin,
                GroupAction::RemoveMember { role: Role::Owner },
            ));
    }

    #[test]
    fn an_admin_cannot_transfer_ownership() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(transfer("admin", "admin"))
            .then_expect_error(forbidden(Role::Admin, GroupAction::TransferOwnership));
    }

    // MEMBER and VIEWER

    #[test]
    fn a_member_cannot_add_change_or_remove_anyone() {
        let cases = [
            (
                add("member", "bob", Role::Viewer),
                GroupAction::AddMember { role: Role::Viewer },
            ),
            (
                change("member", "viewer", Role::Member),
                GroupAction::ChangeRole {
                    from: Role::Viewer,
                    to: Role::Member,
                },
            ),
            (
                remove("member", "viewer"),
                GroupAction::RemoveMember { role: Role::Viewer },
            ),
        ];
        for (command, action) in cases {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(command)
                .then_expect_error(forbidden(Role::Member, action));
        }
    }

    #[test]
    fn a_viewer_cannot_add_members() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(add("viewer", "bob", Role::Viewer))
            .then_expect_error(forbidden(
                Role::Viewer,
                GroupAction::AddMember { role: Role::Viewer },
            ));
    }

    #[test]
    fn a_viewer_cannot_change_or_remove_anyone() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(change("viewer", "member", Role::Viewer))
            .then_expect_error(forbidden(
                Role::Viewer,
                GroupAction::ChangeRole {
                    from: Role::Member,
                    to: Role::Viewer,
                },
            ));
        GroupTest::with(GroupServices)
            .given(populated())
            .when(remove("viewer", "member"))
            .then_expect_error(forbidden(
                Role::Viewer,
                GroupAction::RemoveMember { role: Role::Member },
            ));
    }

    #[test]
    fn any_non_owner_may_leave_and_then_no_longer_acts_for_the_group() {
        for user in ["admin", "member", "viewer"] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(leave(user))
                .then_expect_events(vec![GroupEvent::MemberLeft {
                    user_id: user.into(),
                    at: AT,
                }]);
            let mut events = populated();
            events.push(GroupEvent::MemberLeft {
                user_id: user.into(),
                at: AT,
            });
            assert_eq!(group_from(events.clone()).role_of(user), None);
            GroupTest::with(GroupServices)
                .given(events)
                .when(leave(user))
                .then_expect_error(GroupError::ActorNotAMember { actor: user.into() });
        }
    }

    // Ownership transfer

    #[test]
    fn transferring_ownership_makes_the_old_owner_an_admin() {
        let transferred = GroupEvent::OwnershipTransferred {
            from: "owner".into(),
            to: "viewer".into(),
            former_owner_role: Role::Admin,
            at: AT,
        };
        GroupTest::with(GroupServices)
            .given(populated())
            .when(transfer("owner", "viewer"))
            .then_expect_events(vec![transferred.clone()]);
        let mut events = populated();
        events.push(transferred);
        let group = group_from(events.clone());
        assert_eq!(group.role_of("owner"), Some(Role::Admin));
        assert_eq!(group.role_of("viewer"), Some(Role::Owner));
        assert_eq!(group.owner_id.as_deref(), Some("viewer"));
        // The former owner, now an admin, may leave; the new owner may not.
        GroupTest::with(GroupServices)
            .given(events.clone())
            .when(leave("owner"))
            .then_expect_events(vec![GroupEvent::MemberLeft {
                user_id: "owner".into(),
                at: AT,
            }]);
        GroupTest::with(GroupServices)
            .given(events)
            .when(leave("viewer"))
            .then_expect_error(GroupError::OwnerCannotLeave);
    }

    #[test]
    fn ownership_can_only_be_transferred_to_a_current_member() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(transfer("owner", "bob"))
            .then_expect_error(GroupError::NotAMember {
                user_id: "bob".into(),
            });
    }

    #[test]
    fn transferring_ownership_to_oneself_is_rejected() {
        GroupTest::with(GroupServices)
            .given(populated())
            .when(transfer("owner", "owner"))
            .then_expect_error(GroupError::AlreadyTheOwner {
                user_id: "owner".into(),
            });
    }

    #[test]
    fn members_and_viewers_cannot_transfer_ownership() {
        for (actor, role) in [("member", Role::Member), ("viewer", Role::Viewer)] {
            GroupTest::with(GroupServices)
                .given(populated())
                .when(transfer(actor, "admin"))
                .then_expect_error(forbidden(role, GroupAction::TransferOwnership));
        }
    }

    // Questions other aggregates ask

    #[test]
    fn a_member_may_upload_models_but_a_viewer_may_not() {
        let group = group_from(populated());
        for user in ["owner", "admin", "member"] {
            assert!(group.may_upload_model(user), "{user} should upload");
        }
        assert!(!group.may_upload_model("viewer"));
        assert!(!group.may_upload_model("outsider"));
        assert!(can(Role::Member, GroupAction::UploadModel));
        assert!(!can(Role::Viewer, GroupAction::UploadModel));
    }

    #[test]
    fn only_the_owner_and_admins_may_configure_revenue_splits() {
        let group = group_from(populated());
        assert!(group.may_configure_revenue_split("owner"));
        assert!(group.may_configure_revenue_split("admin"));
        assert!(!group.may_configure_revenue_split("member"));
        assert!(!group.may_configure_revenue_split("viewer"));
        assert!(!group.may_configure_revenue_split("outsider"));
    }

    #[test]
    fn every_member_may_view_the_group_and_outsiders_may_not() {
        let group = group_from(populated());
        for user in ["owner", "admin", "member", "viewer"] {
            assert!(group.may(user, GroupAction::View), "{user} should view");
        }
        assert!(!group.may("outsider", GroupAction::View));
    }

    /// Every cell of the table in `can`'s documentation, row by row, so the two cannot drift.
    #[test]
    fn the_permission_matrix_is_as_documented() {
        use GroupAction as A;
        use Role::{Admin, Member, Owner, Viewer};
        // [OWNER, ADMIN, MEMBER, VIEWER]
        type Row = (&'static str, Vec<GroupAction>, [bool; 4]);
        let pairs = |roles: &[Role]| -> Vec<GroupAction> {
            let mut out = Vec::new();
            for &from in roles {
                for &to in roles {
                    if from != to {
                        out.push(A::ChangeRole { from, to });
                    }
                }
            }
            out
        };
        let touching = |role: Role| -> Vec<GroupAction> {
            Role::ALL
                .into_iter()
                .filter(|&other| other != role)
                .flat_map(|other| {
                    [
                        A::ChangeRole {
                            from: role,
                            to: other,
                        },
                        A::ChangeRole {
                            from: other,
                            to: role,
                        },
                    ]
                })
                .collect()
        };
        let admin_not_owner: Vec<GroupAction> = touching(Admin)
            .into_iter()
            .filter(|action| {
                !matches!(action, A::ChangeRole { from, to } if *from == Owner || *to == Owner)
            })
            .collect();
        let rows: Vec<Row> = vec![
            ("view", vec![A::View], [true, true, true, true]),
            (
                "add ADMIN",
                vec![A::AddMember { role: Admin }],
                [true, false, false, false],
            ),
            (
                "add MEMBER or VIEWER",
                vec![A::AddMember { role: Member }, A::AddMember { role: Viewer }],
                [true, true, false, false],
            ),
            (
                "add OWNER",
                vec![A::AddMember { role: Owner }],
                [false, false, false, false],
            ),
            (
                "change MEMBER <-> VIEWER",
                pairs(&[Member, Viewer]),
                [true, true, false, false],
            ),
            (
                "change from or to ADMIN",
                admin_not_owner,
                [true, false, false, false],
            ),
            (
                "change from or to OWNER",
                touching(Owner),
                [false, false, false, false],
            ),
            (
                "remove MEMBER or VIEWER",
                vec![
                    A::RemoveMember { role: Member },
                    A::RemoveMember { role: Viewer },
                ],
                [true, true, false, false],
            ),
            (
                "remove ADMIN",
                vec![A::RemoveMember { role: Admin }],
                [true, false, false, false],
            ),
            (
                "remove OWNER",
                vec![A::RemoveMember { role: Owner }],
                [false, false, false, false],
            ),
            (
                "transfer ownership",
                vec![A::TransferOwnership],
                [true, false, false, false],
            ),
            (
                "upload model",
                vec![A::UploadModel],
                [true, true, true, false],
            ),
            (
                "configure revenue split",
                vec![A::ConfigureRevenueSplit],
                [true, true, false, false],
            ),
            (
                "distribute revenue",
                vec![A::DistributeRevenue],
                [true, true, false, false],
            ),
            ("leave", vec![A::Leave], [false, true, true, true]),
        ];
        let mut checked = 0;
        for (name, actions, expected) in rows {
            assert!(!actions.is_empty(), "row {name} checks nothing");
            for action in actions {
                for (role, allowed) in Role::ALL.into_iter().zip(expected) {
                    assert_eq!(can(role, action), allowed, "{name}: {role} {action}");
                    checked += 1;
                }
            }
        }
        // 4 roles x (View, TransferOwnership, UploadModel, ConfigureRevenueSplit,
        // DistributeRevenue, Leave, 4 AddMember, 4 RemoveMember, 12 ChangeRole): the table
        // covers every action once.
        assert_eq!(checked, 4 * (6 + 4 + 4 + 12));
    }

    // Serialization

    #[test]
    fn roles_serialize_in_upper_case_and_times_as_rfc3339() {
        assert_eq!(serde_json::to_string(&Role::Owner).unwrap(), "\"OWNER\"");
        assert_eq!(serde_json::to_string(&Role::Viewer).unwrap(), "\"VIEWER\"");
        let json = serde_json::to_value(added("bob", Role::Admin)).unwrap();
        assert_eq!(json["MemberAdded"]["role"], "ADMIN");
        assert_eq!(json["MemberAdded"]["at"], "2026-11-21T10:00:00Z");
        for event in populated() {
            let text = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<GroupEvent>(&text).unwrap(), event);
        }
    }

    #[test]
    fn event_types_are_the_variant_names_at_version_one() {
        let events = [
            created(),
            added("bob", Role::Member),
            role_changed("bob", Role::Member, Role::Viewer, "owner"),
            removed("bob", "owner"),
            GroupEvent::MemberLeft {
                user_id: "bob".into(),
                at: AT,
            },
            GroupEvent::OwnershipTransferred {
                from: "owner".into(),
                to: "bob".into(),
                former_owner_role: Role::Admin,
                at: AT,
            },
        ];
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            let variant = json.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(event.event_type(), variant);
            assert_eq!(event.event_version(), "1.0");
        }
    }

    // The one-owner invariant under arbitrary command sequences

    const USERS: [&str; 5] = ["owner", "u1", "u2", "u3", "u4"];

    fn user() -> impl Strategy<Value = String> {
        prop::sample::select(USERS.to_vec()).prop_map(str::to_string)
    }

    fn role() -> impl Strategy<Value = Role> {
        prop::sample::select(Role::ALL.to_vec())
    }

    fn command() -> impl Strategy<Value = GroupCommand> {
        prop_oneof![
            (user(), user(), role()).prop_map(|(actor, user_id, role)| GroupCommand::AddMember {
                actor,
                user_id,
                role,
                at: AT
            }),
            (user(), user(), role()).prop_map(|(actor, user_id, role)| GroupCommand::ChangeRole {
                actor,
                user_id,
                role,
                at: AT
            }),
            (user(), user()).prop_map(|(actor, user_id)| GroupCommand::RemoveMember {
                actor,
                user_id,
                at: AT
            }),
            user().prop_map(|actor| GroupCommand::Leave { actor, at: AT }),
            (user(), user()).prop_map(|(actor, new_owner)| GroupCommand::TransferOwnership {
                actor,
                new_owner,
                at: AT
            }),
            user().prop_map(|owner| GroupCommand::Create {
                group_id: "g2".into(),
                name: "again".into(),
                description: String::new(),
                owner,
                at: AT
            }),
        ]
    }

    fn owners(group: &Group) -> Vec<&String> {
        group
            .members
            .iter()
            .filter(|(_, role)| **role == Role::Owner)
            .map(|(user_id, _)| user_id)
            .collect()
    }

    proptest! {
        #[test]
        fn a_group_always_has_exactly_one_owner(commands in prop::collection::vec(command(), 1..60)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut history = vec![created()];
                let mut group = group_from(history.clone());
                let mut accepted = 0usize;
                for command in commands {
                    // As the framework does: decide on a copy, keep it only if the command was
                    // accepted.
                    let mut next = group.clone();
                    let sink = EventSink::<Group>::default();
                    if next.handle(command, &GroupServices, &sink).await.is_ok() {
                        accepted += 1;
                        history.extend(sink.collect().await);
                        group = next;
                    }
                    let owners = owners(&group);
                    prop_assert_eq!(owners.len(), 1, "owners {:?} after {:?}", owners, history);
                    prop_assert_eq!(group.owner_id.as_ref(), Some(owners[0]));
                }
                // What handle left in memory is what replaying the stored events rebuilds.
                prop_assert_eq!(&group_from(history.clone()), &group);
                prop_assert_eq!(history.len(), 1 + accepted);
                Ok(())
            })?;
        }
    }
}
