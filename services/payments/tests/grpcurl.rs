//! The real `payments` binary driven by the real grpcurl: what an operator
//! sees on the wire.

use testkit::{GrpcurlOutput, ServiceOptions, ServiceProcess};

const SERVICE: &str = "mesh.payments.v1.Payments";

fn charge(p: &ServiceProcess, body: &str) -> GrpcurlOutput {
    p.grpcurl_call(SERVICE, "Charge", body)
}

#[test]
fn list_shows_payments_health_and_reflection() {
    testkit::conformance::assert_lists_service_health_and_reflection(
        &ServiceProcess::start("payments", ServiceOptions::default()),
        SERVICE,
    );
}

#[test]
fn describe_shows_the_rpcs() {
    testkit::conformance::assert_describes(
        &ServiceProcess::start("payments", ServiceOptions::default()),
        SERVICE,
        &["rpc Charge", "rpc Refund", "rpc GetPayment"],
    );
}

#[test]
fn charge_then_get_round_trips_and_upper_cases_the_currency() {
    let p = ServiceProcess::start("payments", ServiceOptions::default());
    let out = charge(
        &p,
        r#"{"idempotency_key":"k1","user_id":"u_1","amount_cents":1250,"currency":"eur"}"#,
    );
    assert!(out.success, "{out:?}");
    let payment = out.json();
    let id = payment["paymentId"].as_str().expect("paymentId").to_owned();
    assert!(id.starts_with("pay_"), "{payment}");
    assert_eq!(payment["status"], "PAYMENT_STATUS_CAPTURED");
    assert_eq!(payment["currency"], "EUR");
    assert_eq!(payment["amountCents"], "1250");

    let got = p.grpcurl_call(
        SERVICE,
        "GetPayment",
        &format!(r#"{{"payment_id":"{id}"}}"#),
    );
    assert!(got.success, "{got:?}");
    assert_eq!(got.json(), payment);
}

#[test]
fn invalid_charges_name_each_bad_field() {
    let p = ServiceProcess::start("payments", ServiceOptions::default());
    let out = charge(
        &p,
        r#"{"idempotency_key":"","user_id":"u_1","amount_cents":-3,"currency":"EURO"}"#,
    );
    out.assert_status(
        "InvalidArgument",
        &[
            "idempotency_key: must not be empty",
            "amount_cents: must be greater than 0 (got -3)",
            "currency: must be a 3-letter ISO 4217 code",
        ],
    );
}

#[test]
fn the_same_key_with_other_arguments_is_invalid_argument() {
    let p = ServiceProcess::start("payments", ServiceOptions::default());
    let first = charge(
        &p,
        r#"{"idempotency_key":"k1","user_id":"u_1","amount_cents":100,"currency":"EUR"}"#,
    );
    assert!(first.success, "{first:?}");
    let replay = charge(
        &p,
        r#"{"idempotency_key":"k1","user_id":"u_1","amount_cents":100,"currency":"eur"}"#,
    );
    assert!(replay.success, "{replay:?}");
    assert_eq!(replay.json()["paymentId"], first.json()["paymentId"]);
    assert_eq!(
        replay.json()["createdAtUnixMs"],
        first.json()["createdAtUnixMs"]
    );

    let other = charge(
        &p,
        r#"{"idempotency_key":"k1","user_id":"u_1","amount_cents":200,"currency":"EUR"}"#,
    );
    other.assert_status(
        "InvalidArgument",
        &["idempotency_key k1 was already used with different arguments"],
    );
}

#[test]
fn amounts_over_the_configured_limit_are_declined_not_errors() {
    let p = ServiceProcess::start(
        "payments",
        ServiceOptions {
            args: vec!["--decline-over-cents".into(), "5000".into()],
            ..ServiceOptions::default()
        },
    );
    let declined = charge(
        &p,
        r#"{"idempotency_key":"big","user_id":"u_1","amount_cents":5001,"currency":"EUR"}"#,
    );
    assert!(
        declined.success,
        "a decline is a normal answer: {declined:?}"
    );
    assert_eq!(declined.json()["status"], "PAYMENT_STATUS_DECLINED");
    assert_eq!(
        declined.json()["declineReason"],
        "amount 5001 exceeds the limit of 5000"
    );
    let at_limit = charge(
        &p,
        r#"{"idempotency_key":"ok","user_id":"u_1","amount_cents":5000,"currency":"EUR"}"#,
    );
    assert_eq!(at_limit.json()["status"], "PAYMENT_STATUS_CAPTURED");
}

#[test]
fn the_decline_limit_defaults_to_100000_and_reads_its_env_variable() {
    let default = ServiceProcess::start("payments", ServiceOptions::default());
    let out = charge(
        &default,
        r#"{"idempotency_key":"k","user_id":"u_1","amount_cents":150000,"currency":"EUR"}"#,
    );
    assert_eq!(
        out.json()["declineReason"],
        "amount 150000 exceeds the limit of 100000"
    );

    let from_env = ServiceProcess::start(
        "payments",
        ServiceOptions {
            env: vec![("MESH_DECLINE_OVER_CENTS".into(), "10".into())],
            ..ServiceOptions::default()
        },
    );
    let out = charge(
        &from_env,
        r#"{"idempotency_key":"k","user_id":"u_1","amount_cents":11,"currency":"EUR"}"#,
    );
    assert_eq!(
        out.json()["declineReason"],
        "amount 11 exceeds the limit of 10"
    );
}

#[test]
fn refund_is_idempotent_and_refuses_declined_and_unknown_payments() {
    let p = ServiceProcess::start(
        "payments",
        ServiceOptions {
            args: vec!["--decline-over-cents".into(), "1000".into()],
            ..ServiceOptions::default()
        },
    );
    let captured = charge(
        &p,
        r#"{"idempotency_key":"a","user_id":"u_1","amount_cents":900,"currency":"EUR"}"#,
    )
    .json();
    let id = captured["paymentId"].as_str().unwrap();
    let body = format!(r#"{{"payment_id":"{id}"}}"#);
    for _ in 0..2 {
        let out = p.grpcurl_call(SERVICE, "Refund", &body);
        assert!(out.success, "{out:?}");
        assert_eq!(out.json()["status"], "PAYMENT_STATUS_REFUNDED");
        assert_eq!(out.json()["paymentId"], id);
    }

    let declined = charge(
        &p,
        r#"{"idempotency_key":"b","user_id":"u_1","amount_cents":1001,"currency":"EUR"}"#,
    )
    .json();
    let declined_id = declined["paymentId"].as_str().unwrap();
    let out = p.grpcurl_call(
        SERVICE,
        "Refund",
        &format!(r#"{{"payment_id":"{declined_id}"}}"#),
    );
    out.assert_status(
        "FailedPrecondition",
        &[&format!(
            "payment {declined_id} was declined; there is nothing to refund"
        )],
    );

    for method in ["Refund", "GetPayment"] {
        let out = p.grpcurl_call(SERVICE, method, r#"{"payment_id":"pay_unknown"}"#);
        out.assert_status("NotFound", &["payment pay_unknown not found"]);
    }
}

#[test]
fn health_turns_not_serving_on_sigterm_then_the_process_exits_0() {
    testkit::conformance::assert_drains_on_sigterm("payments", SERVICE, ServiceOptions::default());
}

#[test]
fn payments_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServiceOptions {
        data_dir: Some(dir.path().to_owned()),
        ..ServiceOptions::default()
    };
    let first = ServiceProcess::start("payments", options.clone());
    let payment = charge(
        &first,
        r#"{"idempotency_key":"persist","user_id":"u_1","amount_cents":42,"currency":"EUR"}"#,
    )
    .json();
    drop(first);

    let second = ServiceProcess::start("payments", options);
    let id = payment["paymentId"].as_str().unwrap();
    let got = second.grpcurl_call(
        SERVICE,
        "GetPayment",
        &format!(r#"{{"payment_id":"{id}"}}"#),
    );
    assert!(got.success, "{got:?}");
    assert_eq!(got.json(), payment);
    // The idempotency key is remembered too: a replay is not a second charge.
    let replay = charge(
        &second,
        r#"{"idempotency_key":"persist","user_id":"u_1","amount_cents":42,"currency":"EUR"}"#,
    );
    assert_eq!(replay.json()["paymentId"], id);
}
