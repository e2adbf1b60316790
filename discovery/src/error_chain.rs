//! The one error-chain formatter of the workspace (the mesh library, the
//! services and the CLI use it too): transport errors hide their detail in
//! `source()`, so a message a person can act on needs the whole chain.

use std::error::Error;

/// `error: cause: cause…` on one line. A cause whose text is already part of
/// the line (a wrapper that printed its source) is not repeated.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Wrapper {
        message: String,
        source: std::io::Error,
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn joins_causes_and_repeats_none() {
        assert_eq!(error_chain(&refused()), "connection refused");
        let plain = Wrapper {
            message: "cannot reach Consul".into(),
            source: refused(),
        };
        assert_eq!(
            error_chain(&plain),
            "cannot reach Consul: connection refused"
        );
        // The wrapper printed its cause already: at the end or inside.
        for message in [
            "cannot reach Consul: connection refused",
            "connection refused (is Consul running?)",
        ] {
            let printed = Wrapper {
                message: message.into(),
                source: refused(),
            };
            assert_eq!(error_chain(&printed), message);
        }
    }
}
