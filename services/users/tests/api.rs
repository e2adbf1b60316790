//! The users binary's behaviours through a tonic client: paging, and email
//! uniqueness across two instances sharing one database.

use std::{collections::HashSet, time::Duration};

use mesh::proto::users::v1::{users_client::UsersClient, CreateUserRequest, ListUsersRequest};
use testkit::{ServiceOptions, ServiceProcess};
use tonic::{transport::Channel, Code};

async fn client(process: &ServiceProcess) -> UsersClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", process.addr()))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .expect("connect to users");
    UsersClient::new(channel)
}

fn new_user(email: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.into(),
        display_name: "Someone".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_pages_in_creation_order_without_duplicates() {
    let process = ServiceProcess::start("users", ServiceOptions::default());
    let mut users = client(&process).await;
    let mut created = Vec::new();
    for i in 0..7 {
        let user = users
            .create_user(new_user(&format!("user{i}@example.com")))
            .await
            .unwrap()
            .into_inner();
        created.push(user.user_id);
    }

    let mut sizes = Vec::new();
    let mut listed = Vec::new();
    let mut page_token = String::new();
    for _ in 0..10 {
        let page = users
            .list_users(ListUsersRequest {
                page_size: 3,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.users.len());
        listed.extend(page.users.into_iter().map(|u| u.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(!page.next_page_token.contains("u_"), "the token is opaque");
        page_token = page.next_page_token;
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>().len(),
        7,
        "no duplicates"
    );
    // Creation order: the creates were sequential, so only users created in
    // the same millisecond may be ordered by id instead; all are present.
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        created.iter().collect::<HashSet<_>>()
    );

    // page_size 0 means 50: everything on one page, no next token.
    let all = users
        .list_users(ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.users.len(), 7);
    assert!(all.next_page_token.is_empty());
    assert_eq!(
        all.users.iter().map(|u| &u.user_id).collect::<Vec<_>>(),
        listed.iter().collect::<Vec<_>>(),
        "paged and unpaged orders agree"
    );
    let mut times: Vec<i64> = all.users.iter().map(|u| u.created_at_unix_ms).collect();
    let listed_times = times.clone();
    times.sort();
    assert_eq!(listed_times, times, "ordered by creation time");

    let status = users
        .list_users(ListUsersRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_email_on_two_instances_yield_one_user() {
    let data_dir = tempfile::tempdir().unwrap();
    let options = ServiceOptions {
        data_dir: Some(data_dir.path().to_owned()),
        ..Default::default()
    };
    let first = ServiceProcess::start("users", options.clone());
    let second = ServiceProcess::start("users", options);
    let clients = [client(&first).await, client(&second).await];

    let attempts: Vec<_> = (0..10)
        .map(|i| {
            let mut users = clients[i % 2].clone();
            tokio::spawn(async move { users.create_user(new_user("Race@Example.com")).await })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(user) => winners.push(user.into_inner()),
            Err(status) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
                assert_eq!(
                    status.message(),
                    "a user with email race@example.com already exists"
                );
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");

    // Both instances see that one user.
    for mut users in clients {
        let page = users
            .list_users(ListUsersRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.users, winners);
    }
}
