//! Real message brokers on free loopback ports: `redis-server` (append-only
//! file with `appendfsync always`, as the mesh requires) and RabbitMQ
//! (`rabbitmq-server` with its own `epmd`, every path in one temp folder).
//! Both also listen with TLS, on a certificate for `127.0.0.1` and
//! `localhost` from a throw-away CA ([`TlsFiles`]).
//!
//! Both are started by the local-environment engine (`localenv::brokers`,
//! what `mesh up` uses too) from the system's packages
//! (`scripts/install-tools` installs them). A missing server is a test
//! failure that says how to install it.
//! Start one per test binary (RabbitMQ takes seconds and ~130 MB), from a
//! `harness = false` main (see [`crate::harness`]) that drops it at the end.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use localenv::{
    brokers::{
        rabbit::{LocalRabbit, RabbitConfig},
        redis::{LocalRedis, RedisConfig},
        system_program, TlsListener,
    },
    Cancel,
};

use crate::ports::free_port;

/// How long a broker may take to start on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

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
    // Boxed, like RabbitServer's node: tests hold either broker in one enum.
    server: Option<Box<LocalRedis>>,
    config: RedisConfig,
    tls: TlsFiles,
    password: Option<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that requires `password` (`requirepass`, given to
    /// the server in a file).
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned()))
    }

    fn start_with(password: Option<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = TlsFiles::create(dir.path());
        let program = RedisConfig::find_program().unwrap_or_else(|error| panic!("{error}"));
        let mut config = RedisConfig::new(program, free_port(), dir.path().join("data"));
        config.tls = Some(TlsListener {
            port: free_port(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            ca: tls.ca.clone(),
        });
        if let Some(password) = &password {
            let file = dir.path().join("password");
            std::fs::write(&file, password).expect("write the password file");
            config.password_file = Some(file);
        }
        let mut server = Self {
            server: None,
            config,
            tls,
            password,
            dir,
        };
        server.resume();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.config.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// `rediss://127.0.0.1:<TLS port>` (the certificate is signed by
    /// [`Self::tls`]'s CA).
    pub fn tls_url(&self) -> String {
        let port = self.config.tls.as_ref().map_or(0, |tls| tls.port);
        format!("rediss://127.0.0.1:{port}")
    }

    /// The TLS material.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// The folder everything of this server is in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL (no shutdown save: only the fsynced append-only file remains).
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.process().kill().expect("kill redis-server");
        }
    }

    /// Freezes it (SIGSTOP) until [`Self::thaw`]: a stalled broker whose
    /// connections stay open, without a restart's cost.
    pub fn freeze(&mut self) {
        if let Some(server) = self.server.as_mut() {
            server.freeze();
        }
    }

    /// Lets it run again after [`Self::freeze`] (SIGCONT).
    pub fn thaw(&mut self) {
        if let Some(server) = self.server.as_mut() {
            server.thaw();
        }
    }

    /// Whether it runs.
    pub fn is_running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|server| server.process().is_running())
    }

    /// Starts it again on the same port and data after [`Self::kill`].
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "redis-server is already running");
        let server = self
            .config
            .start(START_TIMEOUT, &Cancel::default())
            .unwrap_or_else(|error| panic!("{error}"));
        self.server = Some(Box::new(server));
    }

    /// Runs `redis-cli` with `args` against the server; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let cli = system_program("redis-cli", "/usr/bin/redis-cli", "redis-tools")
            .unwrap_or_else(|error| panic!("{error}"));
        let mut command = Command::new(cli);
        command.args(["-p", &self.config.port.to_string(), "--no-auth-warning"]);
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
    // Boxed: a node's handles are large, and tests hold either broker in one enum.
    rabbit: Box<LocalRabbit>,
    tls: TlsFiles,
    _dir: tempfile::TempDir,
}

impl RabbitServer {
    /// Starts a node (user `guest`, allowed from loopback) and waits until
    /// its AMQP port answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = TlsFiles::create(dir.path());
        // The node's folder is the temp folder itself, TLS files included:
        // as root, all of it is handed to the `rabbitmq` user.
        let mut config = RabbitConfig::new(
            dir.path(),
            format!("mesh{}", free_port()),
            free_port(),
            free_port(),
            free_port(),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        config.tls = Some(TlsListener {
            port: free_port(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            ca: tls.ca.clone(),
        });
        let rabbit = config
            .start(START_TIMEOUT, &Cancel::default())
            .unwrap_or_else(|error| panic!("{error}"));
        Self {
            rabbit: Box::new(rabbit),
            tls,
            _dir: dir,
        }
    }

    /// `amqp://127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.rabbit.config().amqp_port)
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.rabbit.config().amqp_port
    }

    /// `amqps://127.0.0.1:<TLS port>/%2f` (the certificate is signed by
    /// [`Self::tls`]'s CA).
    pub fn tls_url(&self) -> String {
        let port = self.rabbit.config().tls.as_ref().map_or(0, |tls| tls.port);
        format!("amqps://127.0.0.1:{port}/%2f")
    }

    /// The TLS material.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// Stops the node at once (SIGKILL of its process group); its data stays.
    pub fn kill(&mut self) {
        self.rabbit.kill_node().expect("kill the RabbitMQ node");
    }

    /// Freezes the node (SIGSTOP) until [`Self::thaw`]: a stalled broker
    /// whose connections stay open, without the seconds a restart takes.
    pub fn freeze(&mut self) {
        self.rabbit.freeze_node();
    }

    /// Lets it run again after [`Self::freeze`] (SIGCONT).
    pub fn thaw(&mut self) {
        self.rabbit.thaw_node();
    }

    /// Stops the node gracefully (SIGTERM, as an init system does), waiting
    /// for it to exit; its data stays.
    pub fn stop(&mut self) {
        self.rabbit.stop_node().expect("stop the RabbitMQ node");
    }

    /// Starts the node again on the same ports and data after [`Self::kill`].
    pub fn resume(&mut self) {
        self.rabbit
            .resume(START_TIMEOUT, &Cancel::default())
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// The node's log folder (for a failing test's reader).
    pub fn log_dir(&self) -> PathBuf {
        self.rabbit.config().log_dir()
    }
}
