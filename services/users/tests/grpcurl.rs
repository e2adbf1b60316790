//! The users binary as a person sees it through the real grpcurl: the service
//! list, its description, a create/get round trip, readable errors, health on
//! SIGTERM, and data that survives a restart.

use std::time::Duration;

use testkit::{ServiceOptions, ServiceProcess};

const SERVICE: &str = "mesh.users.v1.Users";

fn start() -> ServiceProcess {
    ServiceProcess::start("users", ServiceOptions::default())
}

#[test]
fn list_shows_the_service_health_and_reflection() {
    testkit::conformance::assert_lists_service_health_and_reflection(&start(), SERVICE);
}

#[test]
fn describe_shows_every_rpc() {
    testkit::conformance::assert_describes(
        &start(),
        SERVICE,
        &[
            "rpc CreateUser ( .mesh.users.v1.CreateUserRequest ) returns ( .mesh.users.v1.User )",
            "rpc GetUser ( .mesh.users.v1.GetUserRequest ) returns ( .mesh.users.v1.User )",
            "rpc ListUsers ( .mesh.users.v1.ListUsersRequest ) returns ( .mesh.users.v1.ListUsersResponse )",
        ],
    );
}

#[test]
fn create_then_get_round_trips_with_a_normalised_email() {
    let users = start();
    let created = users.grpcurl_call(
        SERVICE,
        "CreateUser",
        r#"{"email":"  Ada.Lovelace@Example.COM ","display_name":" Ada Lovelace "}"#,
    );
    assert!(created.success, "{created:?}");
    let user = created.json();
    let user_id = user["userId"].as_str().expect("userId").to_owned();
    assert!(
        user_id.starts_with("u_") && user_id.len() == 34,
        "{user_id}"
    );
    assert_eq!(user["email"], "ada.lovelace@example.com");
    assert_eq!(user["displayName"], "Ada Lovelace");
    let created_at: i64 = user["createdAtUnixMs"]
        .as_str()
        .expect("int64 is a JSON string")
        .parse()
        .unwrap();
    assert!(created_at > 1_600_000_000_000, "{created_at}");

    let fetched = users.grpcurl_call(SERVICE, "GetUser", &format!(r#"{{"user_id":"{user_id}"}}"#));
    assert!(fetched.success, "{fetched:?}");
    assert_eq!(fetched.json(), user);
}

#[test]
fn invalid_input_is_invalid_argument_naming_each_field() {
    let users = start();
    let output = users.grpcurl_call(
        SERVICE,
        "CreateUser",
        r#"{"email":"not-an-email","display_name":"   "}"#,
    );
    output.assert_status(
        "InvalidArgument",
        &[
            "Message: invalid CreateUserRequest: email: must contain exactly one '@'; display_name: must not be empty",
            // The field violations also travel as google.rpc.BadRequest
            // details, which grpcurl decodes through reflection.
            r#""fieldViolations":[{"field":"email""#,
        ],
    );

    let output = users.grpcurl_call(SERVICE, "GetUser", r#"{"user_id":""}"#);
    output.assert_status("InvalidArgument", &["user_id: must not be empty"]);

    let output = users.grpcurl_call(SERVICE, "ListUsers", r#"{"page_size":1001}"#);
    output.assert_status(
        "InvalidArgument",
        &["page_size: must be between 1 and 1000"],
    );

    let output = users.grpcurl_call(SERVICE, "ListUsers", r#"{"page_token":"not-ours"}"#);
    output.assert_status(
        "InvalidArgument",
        &["page_token is not a token this service issued"],
    );
}

#[test]
fn a_second_user_with_the_same_email_is_already_exists() {
    let users = start();
    let first = users.grpcurl_call(
        SERVICE,
        "CreateUser",
        r#"{"email":"a@b.co","display_name":"A"}"#,
    );
    assert!(first.success, "{first:?}");
    let second = users.grpcurl_call(
        SERVICE,
        "CreateUser",
        r#"{"email":" A@B.CO","display_name":"B"}"#,
    );
    second.assert_status(
        "AlreadyExists",
        &["Message: a user with email a@b.co already exists"],
    );
}

#[test]
fn an_unknown_user_is_not_found() {
    let users = start();
    let output = users.grpcurl_call(SERVICE, "GetUser", r#"{"user_id":"u_123"}"#);
    output.assert_status("NotFound", &["Message: user u_123 not found"]);
}

#[test]
fn health_turns_not_serving_on_sigterm_and_the_process_exits_0() {
    testkit::conformance::assert_drains_on_sigterm("users", SERVICE, ServiceOptions::default());
}

#[test]
fn data_survives_a_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let options = ServiceOptions {
        data_dir: Some(data_dir.path().to_owned()),
        ..Default::default()
    };
    let mut first = ServiceProcess::start("users", options.clone());
    let created = first.grpcurl_call(
        SERVICE,
        "CreateUser",
        r#"{"email":"keep@b.co","display_name":"Keep"}"#,
    );
    assert!(created.success, "{created:?}");
    first.child.terminate();
    let status = first.child.wait(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status:?}");

    let second = ServiceProcess::start("users", options);
    let user_id = created.json()["userId"].as_str().unwrap().to_owned();
    let fetched = second.grpcurl_call(SERVICE, "GetUser", &format!(r#"{{"user_id":"{user_id}"}}"#));
    assert!(fetched.success, "{fetched:?}");
    assert_eq!(fetched.json(), created.json());
}
