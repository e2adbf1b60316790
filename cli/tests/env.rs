//! `mesh env`: the local environment alone, as the scripts run it — the
//! variables to use it printed once it is ready, then `# ready`; described in
//! `<state>/env.json` so that `mesh status` run there finds it; on SIGTERM the
//! agent stopped and reaped, its port free, the description gone. Secure by
//! default; `--insecure-consul` says what it gives up.

mod common;

use std::{collections::BTreeMap, net::TcpStream, path::Path, time::Duration};

use common::{alive, mesh_in, stderr, stdout};
use nix::sys::signal::Signal;
use testkit::{binary, wait_until, AgentClient, ChildGuard};

const READY: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

/// `mesh env <args>` in the background, output to `<dir>/env.log`.
fn spawn_env(dir: &Path, args: &[&str]) -> ChildGuard {
    let mut command = std::process::Command::new(binary("mesh"));
    command.arg("env").args(args).current_dir(dir);
    for variable in discovery::CONSUL_ENVIRONMENT {
        command.env_remove(variable);
    }
    ChildGuard::spawn("mesh env", command, &dir.join("env.log"))
}

/// The `export NAME='value'` lines printed before `# ready`.
fn exported(env: &mut ChildGuard) -> BTreeMap<String, String> {
    let log = wait_until("mesh env to print `# ready`", READY, || {
        let log = env.log();
        assert!(env.is_running(), "mesh env exited:\n{log}");
        log.lines().any(|line| line == "# ready").then_some(log)
    });
    log.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('\'').to_owned()))
        .collect()
}

#[test]
fn env_runs_a_secure_agent_until_sigterm_and_the_checkout_finds_it() {
    let checkout = tempfile::tempdir().expect("temp dir");
    let mut env = spawn_env(checkout.path(), &[]);
    let variables = exported(&mut env);
    let url = &variables["CONSUL_HTTP_ADDR"];
    assert!(url.starts_with("https://127.0.0.1:"), "{variables:?}");
    let ca = Path::new(&variables["CONSUL_CACERT"]);
    let token = std::fs::read_to_string(&variables["CONSUL_HTTP_TOKEN_FILE"]).expect("token");
    let client = AgentClient::new(url, Some(ca), Some(token.trim()));
    assert_eq!(client.status("GET", "/v1/acl/policies", None).unwrap(), 200);
    assert_eq!(
        client
            .with_token(None)
            .status("GET", "/v1/acl/policies", None)
            .unwrap(),
        403
    );

    // Described where the operator's commands look.
    let description = checkout.path().join(".mesh/env.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&description).expect("env.json")).unwrap();
    let agent_pid = u32::try_from(json["consul"]["pid"].as_u64().expect("pid")).unwrap();
    assert!(alive(agent_pid));
    let status = mesh_in(checkout.path(), &["status"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}{}",
        stdout(&status),
        stderr(&status)
    );
    assert!(
        stdout(&status).contains("no services registered"),
        "{}",
        stdout(&status)
    );

    // SIGTERM: the agent is stopped and reaped, the description removed.
    env.signal(Signal::SIGTERM);
    let exit = env.wait(STOP).expect("mesh env did not stop");
    assert!(exit.success(), "{}", env.log());
    assert!(!alive(agent_pid), "the agent (pid {agent_pid}) is left");
    assert!(!description.exists());
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn env_insecure_consul_is_plain_http_and_says_what_it_gives_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = spawn_env(dir.path(), &["--insecure-consul", "--state-dir", "plain"]);
    let variables = exported(&mut env);
    let url = &variables["CONSUL_HTTP_ADDR"];
    assert!(url.starts_with("http://127.0.0.1:"), "{variables:?}");
    assert!(
        !variables.contains_key("CONSUL_HTTP_TOKEN_FILE"),
        "{variables:?}"
    );
    let log = env.log();
    assert!(
        log.contains("ACLs off") && log.contains("not a security boundary"),
        "{log}"
    );
    // ACLs off: Consul says so.
    let client = AgentClient::new(url, None, None);
    assert_eq!(client.status("GET", "/v1/acl/policies", None).unwrap(), 401);
    env.signal(Signal::SIGINT);
    let exit = env.wait(STOP).expect("mesh env did not stop");
    assert!(exit.success(), "{}", env.log());
}
