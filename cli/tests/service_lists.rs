//! Every file that must name each service, checked against the one list,
//! `mesh_cli::services::ALL` (docs/adding-a-service.md names the same files):
//! a service added to `ALL` fails here until each file lists it, in the form
//! its kind needs (an edge has no database and no gRPC service; a consumer of
//! events is a gRPC service with a database). And the other way round: any
//! file that lists several services on one line must be one of these, or be
//! exempt below with the reason, so that no list escapes the check.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use mesh::service::{ServiceIdentity, ServiceKind};
use mesh_cli::services;

/// Which services a rule is about.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// Every service.
    All,
    /// Those owning a database.
    Database,
}

impl Which {
    fn select(self) -> Vec<&'static ServiceIdentity> {
        services::identities()
            .filter(|service| match self {
                Which::All => true,
                Which::Database => service.owns_database(),
            })
            .collect()
    }
}

/// What a file must contain.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This text (one line, or part of one), built from the selected
    /// services in `ALL`'s order: a list that must be exactly them.
    List(fn(&[&ServiceIdentity]) -> String),
    /// This text once per selected service.
    Each(fn(&ServiceIdentity) -> String),
}

/// One check: `file` (from the workspace root) names `which` services as `expect` says.
#[derive(Debug, Clone, Copy)]
struct Rule {
    file: &'static str,
    which: Which,
    expect: Expect,
}

const fn list(file: &'static str, which: Which, text: fn(&[&ServiceIdentity]) -> String) -> Rule {
    Rule {
        file,
        which,
        expect: Expect::List(text),
    }
}

const fn each(file: &'static str, which: Which, text: fn(&ServiceIdentity) -> String) -> Rule {
    Rule {
        file,
        which,
        expect: Expect::Each(text),
    }
}

fn joined(services: &[&ServiceIdentity], separator: &str, item: impl Fn(&str) -> String) -> String {
    services
        .iter()
        .map(|service| item(service.name))
        .collect::<Vec<_>>()
        .join(separator)
}

fn words(services: &[&ServiceIdentity]) -> String {
    joined(services, " ", str::to_owned)
}

/// The row of the README's and docs/architecture.md's service tables.
fn table_row(service: &ServiceIdentity) -> String {
    match service.grpc_service() {
        Some(grpc_service) => format!(
            "| `{}` | `{grpc_service}` | {} |",
            service.name, service.default_port
        ),
        None => format!("| `{}` | HTTP | {} |", service.name, service.default_port),
    }
}

/// Every file that lists the services, and the form it lists them in.
const RULES: &[Rule] = &[
    // The workspace and the CLI that runs them.
    each("Cargo.toml", Which::All, |s| {
        format!("\"services/{}\",", s.name)
    }),
    each("Cargo.toml", Which::All, |s| {
        format!("{0} = {{ path = \"services/{0}\" }}", s.name)
    }),
    list("Cargo.toml", Which::All, |s| {
        format!(
            "default-members = [\"cli\", \"bench\", {}]",
            joined(s, ", ", |name| format!("\"services/{name}\""))
        )
    }),
    each("cli/Cargo.toml", Which::All, |s| {
        format!("\n{}.workspace = true\n", s.name)
    }),
    // What people read.
    each("README.md", Which::All, table_row),
    each("docs/architecture.md", Which::All, table_row),
    list("docs/deploy.md", Which::Database, |s| {
        format!("for svc in {}; do", words(s))
    }),
    list("docs/deploy.md", Which::All, |s| {
        format!("for holder in {} mesh-read traffic; do", words(s))
    }),
    // Images and the local stacks.
    list("deploy/Dockerfile", Which::All, |s| {
        format!("for bin in {} mesh; do", words(s))
    }),
    list("deploy/Dockerfile", Which::All, |s| {
        let ports: Vec<String> = s.iter().map(|s| s.default_port.to_string()).collect();
        format!("EXPOSE {} 8081 9100", ports.join(" "))
    }),
    list(".github/workflows/ci.yml", Which::All, |s| {
        format!("for bin in {} mesh; do", words(s))
    }),
    each("deploy/docker-compose.yml", Which::All, |s| {
        format!("command: [\"/usr/local/bin/{}\"]", s.name)
    }),
    each("deploy/docker-compose.yml", Which::Database, |s| {
        format!("  {}-data:\n", s.name)
    }),
    list("deploy/prometheus.yml", Which::All, |s| {
        format!("services: [{}]", joined(s, ", ", str::to_owned))
    }),
    // Consul: a policy and a token per service.
    each("k8s/base/consul/kustomization.yaml", Which::All, |s| {
        format!("- acl/{}.hcl", s.name)
    }),
    each("k8s/base/consul/acl-bootstrap-job.yaml", Which::All, |s| {
        format!("name: consul-token-{0}\n", s.name)
    }),
    each("k8s/base/consul/acl-bootstrap-job.yaml", Which::All, |s| {
        format!("path: {}.token\n", s.name)
    }),
    each("k8s/overlays/dev/kustomization.yaml", Which::All, |s| {
        format!("name: consul-token-{}\n", s.name)
    }),
    each("k8s/overlays/prod/kustomization.yaml", Which::All, |s| {
        format!("consul-token-{}", s.name)
    }),
    // Kubernetes: a folder per service, a database per database owner.
    each("k8s/base/kustomization.yaml", Which::All, |s| {
        format!("- services/{}\n", s.name)
    }),
    list(
        "k8s/base/postgres/init-databases.sh",
        Which::Database,
        |s| format!("for svc in {}; do", words(s)),
    ),
    each("k8s/base/postgres/statefulset.yaml", Which::Database, |s| {
        format!("name: {}-db\n", s.name)
    }),
    each(
        "k8s/overlays/dev/kustomization.yaml",
        Which::Database,
        |s| format!("name: {}-db\n", s.name),
    ),
    each(
        "k8s/overlays/prod/kustomization.yaml",
        Which::Database,
        |s| format!("#   {}-db ", s.name),
    ),
    each("scripts/k8s_properties.py", Which::All, |s| {
        match s.grpc_service() {
            Some(grpc_service) => {
                format!("\"{}\": ({}, \"{grpc_service}\"),", s.name, s.default_port)
            }
            None => format!("\"{}\": ({}, None),", s.name, s.default_port),
        }
    }),
    // Scripts that run every service.
    list("scripts/check-prometheus", Which::All, |s| {
        format!(
            "cargo build --quiet --bins {} -p mesh-cli)",
            joined(s, " ", |n| format!("-p {n}"))
        )
    }),
    list("scripts/check-prometheus", Which::All, |s| {
        format!("services=({})", words(s))
    }),
    list("scripts/screenshots/run", Which::All, |s| {
        format!(
            "cargo build --quiet {} --bin mesh)",
            joined(s, " ", |n| format!("--bin {n}"))
        )
    }),
    list("scripts/screenshots/run", Which::All, |s| {
        format!("for service in {}; do", words(s))
    }),
    // Tests that run every service.
    list("tests/postgres.rs", Which::Database, |s| {
        format!(
            "const SERVICES: [&str; {}] = [{}];",
            s.len(),
            joined(s, ", ", |name| format!("\"{name}\""))
        )
    }),
    each("tests/postgres.rs", Which::Database, |s| {
        format!("(\"{}\", \"", s.name)
    }),
];

/// Files that name several services on one line without being a list of
/// every service, and why each may stay as it is when one is added.
const EXEMPT: &[(&str, &str)] = &[
    ("cli/src/services.rs", "the list itself"),
    (
        "docs/adding-a-service.md",
        "the guide: which of today's services are of each kind",
    ),
    (
        "docs/adr/",
        "decisions as they were taken, with the services of the day",
    ),
    (
        "localenv/src/acl/policies.rs",
        "one policy and token per service: checked against ALL by the tests of cli/src/acl/mod.rs",
    ),
    (
        "cli/src/intentions.rs",
        "the call graph, not a list of services",
    ),
    ("cli/tests/up.rs", "a comment on the call graph"),
    ("cli/tests/secure.rs", "a comment on the call graph"),
    ("tests/place_order.rs", "the services a PlaceOrder touches"),
    (
        "bench/src/load/rpc.rs",
        "the services one benchmarked RPC touches",
    ),
    (
        "scripts/bench",
        "the benchmark's topology: the services PlaceOrder touches",
    ),
    (
        "scripts/bench.py",
        "the benchmark's topology: the services PlaceOrder touches",
    ),
    ("scripts/bench_report.py", "the benchmark's process groups"),
    (
        "docs/BENCHMARKS.md",
        "measured results of the four services of the benchmark",
    ),
    ("docs/SAGA.md", "the order saga's participants"),
    ("k8s/base/networkpolicies.yaml", "the call graph"),
    ("proto/mesh/orders/v1/orders.proto", "orders' upstreams"),
    (
        "discovery/tests/secure.rs",
        "names picked for a test's registrations",
    ),
    ("tests/mtls.rs", "the services a PlaceOrder touches"),
    ("tests/tracing.rs", "the services a PlaceOrder touches"),
    (
        "scripts/profile.py",
        "the profiled topology: the services PlaceOrder touches",
    ),
    (
        "docs/bench/",
        "profiles of the services PlaceOrder touches (flame graphs and their explanation)",
    ),
    (
        "bench/src/events/",
        "the events lab's shop: the services PlaceOrder touches, then shipping",
    ),
    (
        "bench/src/order_cost/",
        "PlaceOrder's cost lab: exactly the four services a PlaceOrder touches, one column each",
    ),
    (
        "scripts/bench-durability",
        "PlaceOrder through `mesh up`: the four services an order touches, summed as its cost; \
         every other process of the pids file is reported beside them",
    ),
];

/// Folders never scanned: build output, tools, state, VCS.
const SKIPPED: &[&str] = &[".git", "target", ".tools", ".mesh", "node_modules"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn read(path: &str) -> String {
    fs::read_to_string(root().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

#[test]
fn every_file_that_lists_the_services_lists_exactly_those_of_all() {
    let mut missing = Vec::new();
    for rule in RULES {
        let text = read(rule.file);
        let selected = rule.which.select();
        let expected: Vec<String> = match rule.expect {
            Expect::List(text) => vec![text(&selected)],
            Expect::Each(text) => selected.iter().map(|service| text(service)).collect(),
        };
        for wanted in expected {
            if !text.contains(&wanted) {
                missing.push(format!("{}: {wanted:?}", rule.file));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these files do not list the services of mesh_cli::services::ALL \
         (docs/adding-a-service.md says what each needs):\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_service_has_its_policy_files_and_kubernetes_folder() {
    for service in services::identities() {
        let name = service.name;
        let policy = read(&format!("deploy/consul/acl/{name}.hcl"));
        assert_eq!(
            read(&format!("k8s/base/consul/acl/{name}.hcl")),
            policy,
            "k8s/base/consul/acl/{name}.hcl is a copy of deploy/consul/acl/{name}.hcl"
        );
        assert!(
            root()
                .join(format!("k8s/base/services/{name}/kustomization.yaml"))
                .is_file(),
            "k8s/base/services/{name}/ is missing"
        );
        assert!(
            root().join(format!("services/{name}/Cargo.toml")).is_file(),
            "services/{name}/ is missing"
        );
    }
}

/// `sqlx::migrate!()` embeds a service's migrations when its crate
/// compiles; cargo does not know to compile it again when a migration is
/// added unless the crate's build script says so. Without it, a new
/// migration reached the binary only with some other change to the crate.
#[test]
fn every_service_with_migrations_rebuilds_when_one_changes() {
    for service in services::identities() {
        let name = service.name;
        if !root().join(format!("services/{name}/migrations")).is_dir() {
            continue;
        }
        let build = root().join(format!("services/{name}/build.rs"));
        let script = std::fs::read_to_string(&build).unwrap_or_default();
        assert!(
            script.contains("cargo:rerun-if-changed=migrations"),
            "services/{name}/build.rs must print cargo:rerun-if-changed=migrations \
             (docs/adding-a-service.md)"
        );
    }
}

#[test]
fn names_and_ports_are_unique_and_the_grpc_ports_consecutive() {
    let names: BTreeSet<&str> = services::identities().map(|s| s.name).collect();
    assert_eq!(names.len(), services::ALL.len(), "a name is used twice");
    let ports: BTreeSet<u16> = services::identities().map(|s| s.default_port).collect();
    assert_eq!(ports.len(), services::ALL.len(), "a port is used twice");
    // `mesh up --base-port` shifts the gRPC block as one.
    let grpc: Vec<u16> = services::identities()
        .filter(|s| s.grpc_service().is_some())
        .map(|s| s.default_port)
        .collect();
    let first = services::first_grpc_port();
    let mut sorted = grpc.clone();
    sorted.sort_unstable();
    let consecutive: Vec<u16> = (0..grpc.len()).map(|n| first + n as u16).collect();
    assert_eq!(
        sorted, consecutive,
        "gRPC ports from {first}, one after another"
    );
    for service in services::identities() {
        if let ServiceKind::Edge = service.kind {
            assert!(
                !grpc.contains(&service.default_port),
                "{} (an edge) is in the gRPC block",
                service.name
            );
        }
    }
}

/// Lines naming at least three services (as words) are lists: each file
/// holding one must be checked above or exempt with a reason.
#[test]
fn no_list_of_services_escapes_the_check() {
    let names: Vec<&str> = services::names();
    let checked: BTreeSet<&str> = RULES.iter().map(|rule| rule.file).collect();
    let exempt = |file: &str| {
        EXEMPT.iter().any(|(path, _)| match path.strip_suffix('/') {
            Some(folder) => file.starts_with(&format!("{folder}/")),
            None => file == *path,
        })
    };
    let mut unchecked = Vec::new();
    for file in files(&root()) {
        let relative = file
            .strip_prefix(root())
            .expect("below the root")
            .to_string_lossy()
            .into_owned();
        // A service's own crate and manifests name its upstreams.
        let owned = names.iter().any(|name| {
            relative.starts_with(&format!("services/{name}/"))
                || relative.starts_with(&format!("k8s/base/services/{name}/"))
        });
        if owned || checked.contains(relative.as_str()) || exempt(&relative) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue; // not text
        };
        for (number, line) in text.lines().enumerate() {
            let named = names.iter().filter(|name| names_word(line, name)).count();
            if named >= 3.min(names.len()) {
                let line: String = line.trim().chars().take(160).collect();
                unchecked.push(format!("{relative}:{}: {line}", number + 1));
            }
        }
    }
    assert!(
        unchecked.is_empty(),
        "lines listing services in files no rule checks (add a rule in \
         cli/tests/service_lists.rs and a line in docs/adding-a-service.md, or derive \
         the list from mesh_cli::services::ALL, or exempt the file with a reason):\n{}",
        unchecked.join("\n")
    );
    for (path, _) in EXEMPT {
        assert!(root().join(path).exists(), "{path} (exempt) does not exist");
    }
}

#[test]
fn the_word_finder_needs_word_boundaries() {
    assert!(names_word("for svc in users inventory; do", "users"));
    assert!(names_word("consul-token-users", "users"));
    assert!(names_word("\"users\",", "users"));
    assert!(!names_word("superusers", "users"));
    assert!(!names_word("users_total", "users"));
}

/// `name` in `line`, not inside a longer word (`-`, `.`, `/` and quotes end words).
fn names_word(line: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(name).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Every file below `folder`, skipping build output and tools.
fn files(folder: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(folder).expect("readable folder") {
        let path = entry.expect("folder entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if path.is_dir() {
            if !SKIPPED.contains(&name) {
                found.extend(files(&path));
            }
        } else {
            found.push(path);
        }
    }
    found
}
