//! Group commands: makes the group id and the time, checks that people added to a group have
//! accounts, and runs the `Group` aggregate, whose permission matrix decides everything else.

use std::sync::Arc;

use aiforge_domain::account::Account;
use aiforge_domain::group::{Group, GroupCommand, GroupError, GroupServices, Role};

use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::store::Database;

#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error(transparent)]
    Command(#[from] CommandError<GroupError>),
    #[error("no account with id {0}")]
    UnknownUser(String),
}

pub struct Groups {
    executor: Executor<Group>,
    accounts: Executor<Account>,
    clock: Arc<dyn Clock>,
}

impl Groups {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self {
            executor: Executor::new(db.clone(), clock.clone(), GroupServices),
            accounts: Executor::new(db, clock.clone(), aiforge_domain::account::AccountServices),
            clock,
        }
    }

    pub async fn load(&self, group_id: &str) -> Result<Group, CommandError<GroupError>> {
        self.executor.load(group_id).await
    }

    async fn require_account(&self, user_id: &str) -> Result<(), GroupsError> {
        let account = self
            .accounts
            .load(user_id)
            .await
            .map_err(|e| GroupsError::Command(CommandError::Internal(e.to_string())))?;
        if account.is_registered() {
            Ok(())
        } else {
            Err(GroupsError::UnknownUser(user_id.to_string()))
        }
    }

    pub async fn create(
        &self,
        owner: &str,
        name: &str,
        description: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, GroupsError> {
        let group_id = uuid::Uuid::now_v7().to_string();
        let command = GroupCommand::Create {
            group_id: group_id.clone(),
            name: name.to_string(),
            description: description.to_string(),
            owner: owner.to_string(),
            at: self.clock.now(),
        };
        Ok(self.executor.execute(&group_id, command, meta, &[]).await?)
    }

    pub async fn add_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        role: Role,
        meta: &CommandMeta,
    ) -> Result<Outcome, GroupsError> {
        self.require_account(user_id).await?;
        let command = GroupCommand::AddMember {
            actor: actor.to_string(),
            user_id: user_id.to_string(),
            role,
            at: self.clock.now(),
        };
        Ok(self.executor.execute(group_id, command, meta, &[]).await?)
    }

    pub async fn change_role(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        role: Role,
        meta: &CommandMeta,
    ) -> Result<Outcome, GroupsError> {
        let command = GroupCommand::ChangeRole {
            actor: actor.to_string(),
            user_id: user_id.to_string(),
            role,
            at: self.clock.now(),
        };
        Ok(self.executor.execute(group_id, command, meta, &[]).await?)
    }

    pub async fn remove_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, GroupsError> {
        let command = GroupCommand::RemoveMember {
            actor: actor.to_string(),
            user_id: user_id.to_string(),
            at: self.clock.now(),
        };
        Ok(self.executor.execute(group_id, command, meta, &[]).await?)
    }

    pub async fn leave(
        &self,
        group_id: &str,
        actor: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, GroupsError> {
        let command = GroupCommand::Leave {
            actor: actor.to_string(),
            at: self.clock.now(),
        };
        Ok(self.executor.execute(group_id, command, meta, &[]).await?)
    }

    pub async fn transfer_ownership(
        &self,
        group_id: &str,
        actor: &str,
        new_owner: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, GroupsError> {
        let command = GroupCommand::TransferOwnership {
            actor: actor.to_string(),
            new_owner: new_owner.to_string(),
            at: self.clock.now(),
        };
        Ok(self.executor.execute(group_id, command, meta, &[]).await?)
    }
}
