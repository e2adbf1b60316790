//! `redis-server` as the mesh needs it: append-only file fsynced on every
//! write (`appendfsync always`: an acknowledged `XADD` survives a crash), no
//! snapshots, loopback only, a password when one is given (from a file,
//! written into the server's own mode-0600 configuration file so that it
//! never appears in a process list), and optionally TLS.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{system_program, TlsListener};
use crate::{Cancel, Error, Probe, ProcessSpec, Supervised};

/// The longest password file read.
const MAX_PASSWORD: usize = 512;

/// How to run one `redis-server`.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The program (see [`RedisConfig::find_program`]).
    pub program: PathBuf,
    /// The plain port on 127.0.0.1.
    pub port: u16,
    /// Its data folder (the append-only file); its configuration file and
    /// log go there too.
    pub dir: PathBuf,
    /// A TLS listener besides the plain one.
    pub tls: Option<TlsListener>,
    /// A file holding the password clients must give (`requirepass`).
    pub password_file: Option<PathBuf>,
}

impl RedisConfig {
    /// `redis-server` on `port`, data in `dir`, no TLS, no password.
    pub fn new(program: impl Into<PathBuf>, port: u16, dir: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            port,
            dir: dir.into(),
            tls: None,
            password_file: None,
        }
    }

    /// `redis-server` from `PATH` or `/usr/bin`.
    pub fn find_program() -> Result<PathBuf, Error> {
        system_program("redis-server", "/usr/bin/redis-server", "redis-server")
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The configuration file's text (with the password, if any).
    pub fn config_text(&self) -> Result<String, Error> {
        let mut lines = vec![
            format!("port {}", self.port),
            "bind 127.0.0.1".to_owned(),
            format!("dir {}", quoted(&self.dir.display().to_string())),
            "appendonly yes".to_owned(),
            "appendfsync always".to_owned(),
            "save \"\"".to_owned(),
            "daemonize no".to_owned(),
            "protected-mode yes".to_owned(),
        ];
        if let Some(tls) = &self.tls {
            lines.extend([
                format!("tls-port {}", tls.port),
                "tls-auth-clients no".to_owned(),
                format!("tls-cert-file {}", quoted(&tls.cert.display().to_string())),
                format!("tls-key-file {}", quoted(&tls.key.display().to_string())),
                format!("tls-ca-cert-file {}", quoted(&tls.ca.display().to_string())),
            ]);
        }
        if let Some(file) = &self.password_file {
            lines.push(format!("requirepass {}", quoted(&read_password(file)?)));
        }
        lines.push(String::new());
        Ok(lines.join("\n"))
    }

    /// Writes the configuration file (mode 0600) and returns how to start
    /// the server with it.
    pub fn spec(&self) -> Result<ProcessSpec, Error> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create", &self.dir, e))?;
        let path = self.dir.join("redis.conf");
        let text = self.config_text()?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("cannot write", &path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io("cannot write", &path, e))?;
        Ok(ProcessSpec::new("redis-server", &self.program, self.log()).args([path]))
    }

    /// Starts the server and waits (up to `timeout`) until it answers.
    pub fn start(&self, timeout: Duration, cancel: &Cancel) -> Result<LocalRedis, Error> {
        let mut process = Supervised::spawn(self.spec()?)?;
        process.wait_ready(&mut RedisProbe::new(self.port), timeout, cancel)?;
        Ok(LocalRedis { process })
    }
}

/// A running `redis-server` (stopped and reaped when dropped).
#[derive(Debug)]
pub struct LocalRedis {
    process: Supervised,
}

impl LocalRedis {
    /// The process.
    pub fn process(&mut self) -> &mut Supervised {
        &mut self.process
    }

    /// Freezes the server (SIGSTOP): its connections stay open but it
    /// answers nothing until [`Self::thaw`].
    pub fn freeze(&mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a server frozen by [`Self::freeze`] run again (SIGCONT).
    pub fn thaw(&mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// A graceful stop (SIGTERM: it finishes its append-only file), then
    /// SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<crate::Stopped, Error> {
        self.process.stop(grace)
    }
}

/// Ready once the server answers `PING` — `+PONG`, or `-NOAUTH` when it
/// wants a password — rather than while it still loads its data
/// (`-LOADING`).
#[derive(Debug, Clone, Copy)]
pub struct RedisProbe {
    port: u16,
}

impl RedisProbe {
    /// Probes 127.0.0.1:`port`.
    pub fn new(port: u16) -> Self {
        Self { port }
    }
}

impl Probe for RedisProbe {
    fn check(&mut self) -> Result<(), String> {
        let address = format!("127.0.0.1:{}", self.port);
        let mut stream = TcpStream::connect(&address).map_err(|e| format!("{address}: {e}"))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        stream
            .write_all(b"PING\r\n")
            .map_err(|e| format!("{address}: {e}"))?;
        let mut reply = [0_u8; 64];
        let read = stream
            .read(&mut reply)
            .map_err(|e| format!("{address}: {e}"))?;
        let reply = String::from_utf8_lossy(&reply[..read]);
        if reply.starts_with("+PONG") || reply.starts_with("-NOAUTH") {
            Ok(())
        } else {
            Err(format!(
                "{address} answered PING with {:?}",
                reply.trim_end()
            ))
        }
    }
}

/// The password in `file` (one line; surrounding whitespace ignored).
fn read_password(file: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io("cannot read", file, e))?;
    let password = text.trim();
    let bad = |reason| Error::BadPassword {
        path: file.to_owned(),
        reason,
    };
    if password.is_empty() {
        return Err(bad("the password file is empty"));
    }
    if password.len() > MAX_PASSWORD {
        return Err(bad("the password is longer than 512 bytes"));
    }
    if password.chars().any(char::is_control) {
        return Err(bad("the password holds a control character"));
    }
    Ok(password.to_owned())
}

/// A value in Redis configuration syntax: double quotes, `\` and `"`
/// escaped.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_configuration_is_durable_and_the_password_stays_out_of_the_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cr\"et\n").unwrap();
        let mut config = RedisConfig::new("/usr/bin/redis-server", 6400, dir.path().join("data"));
        config.password_file = Some(password);
        let spec = config.spec().unwrap();
        let arguments = format!("{:?}", spec.args);
        assert!(!arguments.contains("s3cr"), "{arguments}");
        let path = dir.path().join("data/redis.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        for line in [
            "port 6400",
            "appendonly yes",
            "appendfsync always",
            "bind 127.0.0.1",
            "requirepass \"s3cr\\\"et\"",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unusable_password_files_are_refused_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        for (content, reason) in [("\n", "empty"), ("a\u{7}b", "control character")] {
            std::fs::write(&file, content).unwrap();
            let error = read_password(&file).unwrap_err().to_string();
            assert!(error.contains(reason), "{error}");
        }
        std::fs::write(&file, "p".repeat(600)).unwrap();
        let error = read_password(&file).unwrap_err().to_string();
        assert!(
            error.contains("longer") && !error.contains("ppp"),
            "{error}"
        );
    }

    #[test]
    fn the_probe_says_why_nothing_is_ready() {
        let port = crate::ports::free_port().unwrap();
        let answer = RedisProbe::new(port).check().unwrap_err();
        assert!(answer.contains(&port.to_string()), "{answer}");
    }
}
