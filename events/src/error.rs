//! What can go wrong talking to a broker.

use crate::envelope::MalformedEvent;

/// A broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached or dropped the connection: retry later.
    #[error("the {broker} broker is unreachable: {detail}")]
    Unavailable {
        /// `redis` or `rabbitmq`.
        broker: &'static str,
        /// What happened (bounded, never a credential).
        detail: String,
    },
    /// The broker answered, but refused or failed the operation.
    #[error("the {broker} broker refused {operation}: {detail}")]
    Refused {
        /// `redis` or `rabbitmq`.
        broker: &'static str,
        /// What was asked.
        operation: &'static str,
        /// Its answer (bounded).
        detail: String,
    },
    /// Publishing was not confirmed (negative acknowledgement, unroutable,
    /// or no answer in time): the event may or may not be stored.
    #[error("the {broker} broker did not confirm the publish: {detail}")]
    NotConfirmed {
        /// `redis` or `rabbitmq`.
        broker: &'static str,
        /// Why.
        detail: String,
    },
    /// The event cannot be published as it is.
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    /// No broker is configured or registered.
    #[error("no broker: {0}")]
    NotConfigured(String),
}

impl BrokerError {
    /// Whether trying again later may succeed (the broker was down or did
    /// not answer), as opposed to a request it will always refuse.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::NotConfirmed { .. } | Self::NotConfigured(_)
        )
    }

    pub(crate) fn unavailable(broker: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            broker,
            detail: crate::envelope::bounded(&error.to_string(), 300),
        }
    }

    pub(crate) fn refused(
        broker: &'static str,
        operation: &'static str,
        error: impl std::fmt::Display,
    ) -> Self {
        Self::Refused {
            broker,
            operation,
            detail: crate::envelope::bounded(&error.to_string(), 300),
        }
    }
}
