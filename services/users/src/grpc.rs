//! The tonic service: validate (domain), act (store), answer. Store errors
//! become gRPC statuses in one place, [`impl From<StoreError> for Status`](StoreError).

use mesh::proto::users::v1::{
    users_server::Users, CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse,
    User,
};
use tonic::{Request, Response, Status};

use crate::{
    domain,
    store::{Store, StoreError, UserRecord},
};

/// The `mesh.users.v1.Users` implementation.
#[derive(Debug, Clone)]
pub struct UsersService {
    store: Store,
}

impl UsersService {
    /// Serves from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl Users for UsersService {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<User>, Status> {
        let new_user = domain::validate_create(request.get_ref())?;
        let user_id = domain::new_user_id();
        let record = self
            .store
            .create(&user_id, &new_user, mesh::storage::now_unix_ms())
            .await?;
        tracing::info!(user_id = %record.user_id, "user created");
        Ok(Response::new(to_proto(record)))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let user_id = domain::validate_get(request.get_ref())?;
        // Through the gateway, an end user reads only its own account.
        mesh::caller::Caller::of(&request).may_act_for(&user_id, &format!("user {user_id}"))?;
        let record = self.store.get(&user_id).await?;
        Ok(Response::new(to_proto(record)))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let page = domain::validate_list(request.get_ref())?;
        let found = self.store.list(page.size, page.after.as_ref()).await?;
        Ok(Response::new(ListUsersResponse {
            users: found.users.into_iter().map(to_proto).collect(),
            next_page_token: found.next.map(|key| key.encode()).unwrap_or_default(),
        }))
    }
}

fn to_proto(record: UserRecord) -> User {
    User {
        user_id: record.user_id,
        email: record.email,
        display_name: record.display_name,
        created_at_unix_ms: record.created_at_unix_ms,
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(user_id) => Status::not_found(format!("user {user_id} not found")),
            StoreError::EmailTaken(email) => {
                Status::already_exists(format!("a user with email {email} already exists"))
            }
            StoreError::Database(error) if mesh::storage::is_transient(&error) => {
                tracing::warn!(%error, "users database busy or unreachable");
                Status::unavailable("the users database is busy or unreachable; try again")
            }
            StoreError::Write(error) if error.is_transient() => {
                tracing::warn!(%error, "users write not committed");
                Status::unavailable("the users database is busy or unreachable; try again")
            }
            StoreError::Read(error) if error.is_transient() => {
                tracing::warn!(%error, "users read not run");
                Status::unavailable("the users database is busy or unreachable; try again")
            }
            StoreError::Sqlite(error) if mesh::storage::is_sqlite_busy(&error) => {
                tracing::warn!(%error, "users database busy");
                Status::unavailable("the users database is busy or unreachable; try again")
            }
            StoreError::Database(_)
            | StoreError::Sqlite(_)
            | StoreError::Write(_)
            | StoreError::Read(_) => {
                // The cause goes to the log only: SQL text is not for callers.
                tracing::error!(%error, "users database error");
                Status::internal("the users database failed; the error was logged")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn store_errors_map_to_codes_with_readable_messages() {
        let status = Status::from(StoreError::NotFound("u_123".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "user u_123 not found");

        let status = Status::from(StoreError::EmailTaken("a@b.c".into()));
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(status.message(), "a user with email a@b.c already exists");

        let status = Status::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);

        let status = Status::from(StoreError::Write(mesh::storage::WriteError::QueueFull {
            database: "users".into(),
            capacity: 1024,
        }));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "the users database is busy or unreachable; try again"
        );

        let status = Status::from(StoreError::Read(mesh::storage::ReadError::Busy {
            database: "users".into(),
            capacity: 1024,
        }));
        assert_eq!(status.code(), Code::Unavailable);
        let status = Status::from(StoreError::Read(mesh::storage::ReadError::Panicked {
            database: "users".into(),
        }));
        assert_eq!(status.code(), Code::Internal);
        let locked = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None);
        assert_eq!(
            Status::from(StoreError::Sqlite(locked)).code(),
            Code::Unavailable
        );

        let status = Status::from(StoreError::Database(sqlx::Error::Protocol(
            "SELECT secret FROM users".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"), "no SQL leaks out");
    }
}
