//! Where the engine's results go: the event log, incident reports, metrics and the alert history.

pub mod crowdsec;
pub mod events;
pub mod history;
pub mod metrics;
pub mod report;
