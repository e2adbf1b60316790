//! The front door end to end, against one real mesh (Consul with the
//! shipped intentions, Redis, the five services with Connect mTLS, the gateway)
//! started once for this test binary: each check below is a behaviour a
//! client of the gateway sees, through real `curl` and `grpcurl`.

#[path = "../common/mod.rs"]
mod common;

mod allow_list;
mod auth;
mod errors;
mod exposure;
mod observability;
mod protection;
mod rest;
mod shipments;

use common::{Shop, ShopOptions};
use testkit::otlp::Collector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let shop = Shop::start(ShopOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ],
        // Every check below calls from 127.0.0.1, many without a token: the
        // default anonymous bucket (5/s, burst 20) would answer some of them
        // 429 depending on how fast the machine runs them. The limits have
        // their own test, on a gateway of their own (`protection::STRICT`).
        gateway_args: [
            "--anonymous-rate-limit",
            "1000",
            "--anonymous-rate-burst",
            "1000",
        ]
        .map(String::from)
        .to_vec(),
    });
    // The checks block on curl and grpcurl: off the runtime's workers, which
    // keep serving the collector and the test's echo service meanwhile.
    tokio::task::block_in_place(|| {
        shop.stock("WIDGET-1", 1000, 1999);
        shop.stock("GADGET-2", 5, 4999);
        rest::curl_signs_up_reads_orders_lists_and_cancels(&shop);
        shipments::a_shipment_is_read_by_its_owner_only(&shop);
        auth::without_a_token_401_with_another_users_token_403(&shop);
        auth::services_believe_the_subject_only_from_the_gateway_identity(&shop);
        allow_list::internal_rpcs_answer_404_on_rest_grpc_and_grpc_web(&shop);
        allow_list::an_intention_denies_the_gateway_payments(&shop);
        errors::errors_are_http_statuses_with_google_rpc_status_bodies(&shop);
        let strict = shop.another_gateway(protection::STRICT);
        protection::limits_answer_413_414_431_and_429(&shop, &strict);
        protection::a_client_that_sends_its_headers_too_slowly_is_cut_off(&strict);
        protection::cors_only_for_configured_origins(&shop, &strict);
    });
    exposure::an_annotated_rpc_of_a_new_proto_is_exposed_with_no_gateway_change(&shop).await;
    observability::one_trace_from_curl_through_the_gateway_to_payments(&shop, &collector).await;
    tokio::task::block_in_place(|| {
        observability::an_access_log_line_per_request_and_http_metrics(&shop)
    });
}
