//! The names of RabbitMQ's exchanges and queues for topics and groups.

/// The topic exchange every event is published to (routing key = topic).
pub const EXCHANGE: &str = "mesh.events";

/// The direct exchange of dead letters (routing key = the dead-letter queue).
pub const DEAD_LETTER_EXCHANGE: &str = "mesh.events.dead";

/// The retained log of `topic` (a classic queue with a message TTL).
pub fn log_queue(topic: &str) -> String {
    format!("mesh.events.{topic}.log")
}

/// The quorum queue of `group` on `topic`.
pub fn group_queue(topic: &str, group: &str) -> String {
    format!("mesh.events.{topic}.{group}")
}

/// The dead-letter queue of `group` on `topic`.
pub fn dead_letter_queue(topic: &str, group: &str) -> String {
    format!("mesh.events.{topic}.dead.{group}")
}
