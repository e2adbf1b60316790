//! Real message brokers on free loopback ports: `redis-server` (append-only
//! file with `appendfsync always`, as the mesh requires) and RabbitMQ
//! (`rabbitmq-server` with its own `epmd`, every path in one temp folder).
//! Both also listen with TLS, on a certificate for `127.0.0.1` and
//! `localhost` from a throw-away CA ([`TlsFiles`]).
//!
//! Both come from the system's packages (`scripts/install-tools` installs
//! them). A missing server is a test failure that says how to install it.
//! Start one per test binary (RabbitMQ takes seconds and ~130 MB), from a
//! `harness = false` main (see [`crate::harness`]) that drops it at the end.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use nix::unistd::{chown, Uid, User};

use crate::{ports::free_port, process::ChildGuard, wait::wait_until};

/// A throw-away CA and a server certificate it signed for `127.0.0.1` and
/// `localhost`, as PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (what a client trusts).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Writes a fresh CA and server certificate into `dir`.
    pub fn create(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mesh test broker CA");
        let ca = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let files = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        std::fs::write(&files.ca, ca.pem()).expect("write the CA");
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }
}

/// A `redis-server` in a temp folder; stopping and starting it again keeps
/// its data (the append-only file).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<ChildGuard>,
    port: u16,
    tls_port: u16,
    tls: TlsFiles,
    dir: tempfile::TempDir,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned()))
    }

    fn start_with(password: Option<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            port: free_port(),
            tls_port: free_port(),
            tls: TlsFiles::create(dir.path()),
            dir,
            password,
        };
        server.resume();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<TLS port>` (the certificate is signed by
    /// [`Self::tls`]'s CA).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    /// The TLS material.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// SIGKILL (no shutdown save: only the fsynced append-only file remains).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Whether it runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Starts it again on the same port and data after [`Self::kill`].
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let binary = system_binary("redis-server", "/usr/bin/redis-server");
        let mut command = Command::new(binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .args([
                "--tls-port",
                &self.tls_port.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&self.tls.cert)
            .arg("--tls-key-file")
            .arg(&self.tls.key)
            .arg("--tls-ca-cert-file")
            .arg(&self.tls.ca);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let log = self.dir.path().join("redis.log");
        self.child = Some(ChildGuard::spawn("redis-server", command, &log));
        let port = self.port;
        wait_until(
            "redis-server to accept connections",
            Duration::from_secs(30),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(drop)
            },
        );
    }

    /// Runs `redis-cli` with `args` against the server; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let cli = system_binary("redis-cli", "/usr/bin/redis-cli");
        let mut command = Command::new(cli);
        command.args(["-p", &self.port.to_string(), "--no-auth-warning"]);
        if let Some(password) = &self.password {
            command.args(["-a", password]);
        }
        let output = command.args(args).output().expect("run redis-cli");
        assert!(
            output.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A RabbitMQ node (and its `epmd`) in a temp folder. Dropping it stops
/// both and reaps them.
#[derive(Debug)]
pub struct RabbitServer {
    node: Option<ChildGuard>,
    _epmd: ChildGuard,
    amqp_port: u16,
    amqps_port: u16,
    tls: TlsFiles,
    dist_port: u16,
    epmd_port: u16,
    dir: tempfile::TempDir,
    run_as: Option<User>,
    name: String,
}

impl RabbitServer {
    /// Starts a node (user `guest`, allowed from loopback) and waits until
    /// its AMQP port answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let run_as = Uid::effective().is_root().then(|| {
            User::from_name("rabbitmq").ok().flatten().expect(
                "running as root needs the `rabbitmq` user: install the rabbitmq-server package (scripts/install-tools does)",
            )
        });
        let epmd_port = free_port();
        let epmd_binary = epmd();
        let mut epmd_command = Command::new(epmd_binary);
        epmd_command
            .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        let epmd = ChildGuard::spawn("epmd", epmd_command, &dir.path().join("epmd.log"));
        // Listening before the node starts, or the node starts a daemon of
        // its own that would outlive the test.
        wait_until("epmd to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", epmd_port))
                .ok()
                .map(drop)
        });
        let name = format!("mesh{}", free_port());
        let tls = TlsFiles::create(dir.path());
        let mut server = Self {
            node: None,
            _epmd: epmd,
            amqp_port: free_port(),
            amqps_port: free_port(),
            tls,
            dist_port: free_port(),
            epmd_port,
            dir,
            run_as,
            name,
        };
        server.resume();
        server
    }

    /// `amqp://127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.amqp_port
    }

    /// `amqps://127.0.0.1:<TLS port>/%2f` (the certificate is signed by
    /// [`Self::tls`]'s CA).
    pub fn tls_url(&self) -> String {
        format!("amqps://127.0.0.1:{}/%2f", self.amqps_port)
    }

    /// The TLS material.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// Stops the node at once (SIGKILL of its process group); its data stays.
    pub fn kill(&mut self) {
        if let Some(mut node) = self.node.take() {
            let group = nix::unistd::Pid::from_raw(-(node.pid() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            node.kill();
        }
    }

    /// Stops the node gracefully (SIGTERM, as an init system does), waiting
    /// for it to exit; its data stays.
    pub fn stop(&mut self) {
        if let Some(mut node) = self.node.take() {
            let group = nix::unistd::Pid::from_raw(-(node.pid() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            if node.wait(Duration::from_secs(60)).is_none() {
                let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
                node.kill();
            }
        }
    }

    /// Starts the node again on the same ports and data after [`Self::kill`].
    pub fn resume(&mut self) {
        assert!(self.node.is_none(), "RabbitMQ is already running");
        let base = self.dir.path().join("node");
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(base.join(sub)).expect("create the node folders");
        }
        std::fs::write(base.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        std::fs::write(
            base.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\n\
                 listeners.ssl.1 = 127.0.0.1:{}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
                self.amqp_port,
                self.amqps_port,
                self.tls.ca.display(),
                self.tls.cert.display(),
                self.tls.key.display()
            ),
        )
        .expect("write rabbitmq.conf");
        if let Some(user) = &self.run_as {
            chown_tree(self.dir.path(), user);
        }
        let script = system_binary("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server");
        let mut command = Command::new(script);
        let node_name = format!("{}@localhost", self.name);
        command
            .current_dir(&base)
            .env("HOME", &base)
            .env("RABBITMQ_NODENAME", &node_name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", base.join("feature_flags"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                base.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .process_group(0);
        if let Some(user) = &self.run_as {
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let log = self.dir.path().join("rabbitmq.log");
        self.node = Some(ChildGuard::spawn("rabbitmq-server", command, &log));
        let port = self.amqp_port;
        let node = self.node.as_mut().expect("just started");
        wait_until(
            "RabbitMQ to accept AMQP connections",
            Duration::from_secs(90),
            || {
                assert!(
                    node.is_running(),
                    "rabbitmq-server exited; its log:\n{}",
                    node.log()
                );
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(drop)
            },
        );
    }

    /// The node's log folder (for a failing test's reader).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("node/log")
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.kill();
        // Whatever epmd holds the port (ours, or one a node started).
        let _ = Command::new(epmd())
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .output();
    }
}

fn chown_tree(path: &Path, user: &User) {
    chown(path, Some(user.uid), Some(user.gid)).expect("chown for the rabbitmq user");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            chown_tree(&entry.expect("dir entry").path(), user);
        }
    }
}

/// `name` from `PATH`, else at `fallback` (Debian's place for it).
fn system_binary(name: &str, fallback: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }) {
        return path;
    }
    let fallback = PathBuf::from(fallback);
    assert!(
        fallback.is_file(),
        "{name} not found on PATH nor at {}: install the redis-server and rabbitmq-server \
         packages (scripts/install-tools does)",
        fallback.display()
    );
    fallback
}

/// Erlang's `epmd` (the newest `/usr/lib/erlang/erts-*/bin/epmd`, or `PATH`).
fn epmd() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/erlang")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| name.starts_with("erts-"))
                })
                .map(|path| path.join("bin/epmd"))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates
        .pop()
        .unwrap_or_else(|| system_binary("epmd", "/usr/bin/epmd"))
}
