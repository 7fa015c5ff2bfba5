//! Astra's userspace: the agent that loads the XDP/TC dataplane, polls its maps and manages
//! the kernel blocklist, and the `astra` command line that drives it.
pub mod addr;
pub mod agent;
pub mod api;
pub mod bench;
pub mod blocklist;
pub mod cli;
pub mod config;
pub mod detect;
pub mod engine;
pub mod error;
pub mod events;
pub mod features;
pub mod feeds;
pub mod files;
pub mod flowtable;
pub mod forest;
pub mod history;
pub mod lab;
pub mod limits;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod report;
pub mod scenario;
pub mod store;
pub mod text;
pub mod token;
pub mod traffic;
pub mod verdict;

pub use error::{Error, Result};
