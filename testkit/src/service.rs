//! A mesh service binary running as a real process.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    grpcurl::{grpcurl, GrpcurlOutput},
    paths::binary,
    ports::free_port,
    process::ChildGuard,
};

/// How to start a service process.
///
/// The harness always passes `--mtls` explicitly (the binaries' own default is
/// `required`): `off` unless [`ServiceOptions::mtls`] is set, so that plain
/// `grpcurl -plaintext` works; with `mtls: true` (needs `consul`) the service
/// serves Connect mTLS only: call it with [`crate::grpcurl_mtls`] and a
/// leaf from [`crate::ConsulAgent::cert_files`], or in-process with a
/// `mesh::connect::Identity`. Health is always plaintext on its own port.
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// The Consul agent's HTTP address; `None` runs with `--no-consul`.
    pub consul: Option<String>,
    /// `--mtls=required` (Connect mTLS + intentions) instead of `--mtls=off`.
    pub mtls: bool,
    /// The data folder (shared by instances of one service); a fresh temp dir when `None`.
    pub data_dir: Option<PathBuf>,
    /// `--instance-id`; default `<service>-<port>`.
    pub instance_id: Option<String>,
    /// Port to listen on; a free port when `None`.
    pub port: Option<u16>,
    /// `--drain`; 300 ms when `None`, so tests stay quick.
    pub drain: Option<Duration>,
    /// More flags.
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
}

/// A running service binary. Dropping it kills and reaps the process.
#[derive(Debug)]
pub struct ServiceProcess {
    /// The service (and binary) name.
    pub name: String,
    /// The gRPC port on 127.0.0.1.
    pub port: u16,
    /// The plaintext health port on 127.0.0.1 (`--health-listen`).
    pub health_port: u16,
    /// Whether it serves Connect mTLS (`--mtls=required`).
    pub mtls: bool,
    /// The instance id it was given.
    pub instance_id: String,
    /// The process.
    pub child: ChildGuard,
    _data_dir: Option<tempfile::TempDir>,
    // Dropped after `child`, whose drop prints the log's tail when a test fails.
    _log_dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts the service binary `name` (`users`…) and waits until its
    /// gRPC health says SERVING.
    pub fn start(name: &str, options: ServiceOptions) -> Self {
        let mut process = Self::spawn(name, options);
        process.wait_serving(Duration::from_secs(60));
        process
    }

    /// Starts `name` without waiting for it.
    pub fn spawn(name: &str, options: ServiceOptions) -> Self {
        let port = options.port.unwrap_or_else(free_port);
        let health_port = free_port();
        assert!(
            !options.mtls || options.consul.is_some(),
            "mtls needs a Consul agent (the Connect CA issues the certificates)"
        );
        let instance_id = options
            .instance_id
            .unwrap_or_else(|| format!("{name}-{port}"));
        let (data_dir, owned_dir) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                (dir.path().to_owned(), Some(dir))
            }
        };
        let mut command = Command::new(binary(name));
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--instance-id")
            .arg(&instance_id)
            .arg("--drain")
            .arg(format!(
                "{}ms",
                options
                    .drain
                    .unwrap_or(Duration::from_millis(300))
                    .as_millis()
            ))
            .arg("--health-listen")
            .arg(format!("127.0.0.1:{health_port}"))
            .arg("--mtls")
            .arg(if options.mtls { "required" } else { "off" });
        match &options.consul {
            Some(address) => command.arg("--consul-addr").arg(address),
            None => command.arg("--no-consul"),
        };
        command.args(&options.args);
        command.env(
            "RUST_LOG",
            std::env::var("MESH_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        command.env_remove("DATABASE_URL");
        command.envs(options.env.iter().map(|(key, value)| (key, value)));
        let log_dir = tempfile::Builder::new()
            .prefix("mesh-test-log-")
            .tempdir()
            .expect("temp dir");
        let child = ChildGuard::spawn(
            name,
            command,
            &log_dir.path().join(format!("{instance_id}.log")),
        );
        Self {
            name: name.to_owned(),
            port,
            health_port,
            mtls: options.mtls,
            instance_id,
            child,
            _data_dir: owned_dir,
            _log_dir: log_dir,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<health port>`.
    pub fn health_addr(&self) -> String {
        format!("127.0.0.1:{}", self.health_port)
    }

    /// Calls `<grpc_service>/<method>` on this process's gRPC port with the
    /// JSON request `body`: `grpcurl -plaintext -d <body> <addr> <service>/<method>`.
    pub fn grpcurl_call(&self, grpc_service: &str, method: &str, body: &str) -> GrpcurlOutput {
        grpcurl(&[
            "-d",
            body,
            &self.addr(),
            &format!("{grpc_service}/{method}"),
        ])
    }

    /// The health status grpcurl reads (plaintext, on the health port) for
    /// `service` (`""` = the server), or grpcurl's error text.
    pub fn health(&self, service: &str) -> String {
        let request = format!(r#"{{"service":"{service}"}}"#);
        let output = grpcurl(&[
            "-d",
            &request,
            &self.health_addr(),
            "grpc.health.v1.Health/Check",
        ]);
        if output.success {
            output.json()["status"].as_str().unwrap_or("").to_owned()
        } else {
            output.stderr
        }
    }

    /// Waits until health for `""` is SERVING; panics with the log if the
    /// process exits or the time runs out.
    pub fn wait_serving(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // Cheap TCP probe first, grpcurl once the port is open.
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.health_port)).is_ok()
                && self.health("") == "SERVING"
            {
                return;
            }
            assert!(
                self.child.is_running(),
                "{} exited before serving; log:\n{}",
                self.instance_id,
                self.child.log()
            );
            assert!(
                Instant::now() < deadline,
                "{} did not become SERVING within {timeout:?}; log:\n{}",
                self.instance_id,
                self.child.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
