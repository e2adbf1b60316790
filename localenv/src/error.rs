//! What can go wrong while starting, probing or stopping a local environment.

use std::{path::PathBuf, time::Duration};

use crate::CallError;

/// Why the engine could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`cannot write`, `cannot create`…).
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("cannot start {name} ({}): {source}", program.display())]
    Spawn {
        /// The process's name (`consul`, `redis`…).
        name: String,
        /// The program.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The process exited before it was ready.
    #[error("{name} exited ({status}) before it was ready; the end of {}:\n{tail}", log.display())]
    Exited {
        /// The process's name.
        name: String,
        /// How it exited.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// The process did not become ready in time.
    #[error("{name} was not ready within {timeout:?} ({last}); see {}", log.display())]
    NotReady {
        /// The process's name.
        name: String,
        /// How long it had.
        timeout: Duration,
        /// The probe's last answer.
        last: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The wait was cancelled (a stop signal while starting).
    #[error("cancelled while starting")]
    Cancelled,
    /// A helper command (`consul tls …`) failed.
    #[error("`{command}` failed in {}: {output}", dir.display())]
    Command {
        /// The command line.
        command: String,
        /// Where it ran.
        dir: PathBuf,
        /// What it printed (bounded).
        output: String,
    },
    /// A call to Consul failed.
    #[error("{what}: {source}")]
    Consul {
        /// What the call was for.
        what: String,
        /// What the client said.
        source: CallError,
    },
    /// A token file holds something that is not a Consul SecretID.
    #[error("{} does not hold a UUID: Consul token SecretIDs are UUIDs (delete the file to get a new token)", path.display())]
    BadToken {
        /// The file.
        path: PathBuf,
    },
    /// No free loopback ports could be found.
    #[error("found no {count} free loopback ports")]
    NoFreePorts {
        /// How many were needed.
        count: usize,
    },
    /// Something is already listening where the agent should.
    #[error("something already listens on 127.0.0.1:{port}; stop it, or pick another port")]
    PortTaken {
        /// The port.
        port: u16,
    },
    /// A server program is not installed.
    #[error("{name} not found on PATH nor at {}: install the {package} package (scripts/install-tools does)", fallback.display())]
    MissingProgram {
        /// The program's name.
        name: String,
        /// Where it was looked for besides `PATH`.
        fallback: PathBuf,
        /// The package that has it.
        package: &'static str,
    },
    /// A broker's password file is unusable.
    #[error("{}: {reason}", path.display())]
    BadPassword {
        /// The file.
        path: PathBuf,
        /// Why (never the password).
        reason: &'static str,
    },
    /// A description file (`env.json`) could not be read.
    #[error("{} is not a local environment description: {reason}", path.display())]
    Description {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// A failed call to Consul, for `what`.
    pub(crate) fn consul(what: impl Into<String>, source: CallError) -> Self {
        Self::Consul {
            what: what.into(),
            source,
        }
    }
}
