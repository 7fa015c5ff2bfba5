//! Astra's userspace: the agent that loads the XDP/TC dataplane, polls its maps and manages
//! the kernel lists, and the `astra` command line that drives it.
//!
//! The modules follow the data path, bottom to top; every import points down (ARCHITECTURE.md
//! has the picture, and `cargo xtask tidy` keeps it):
//!
//! - foundation: [`text`], [`clock`], [`files`], [`addr`], [`store`], [`error`], [`limits`]
//! - [`dataplane`]: the kernel boundary (loading, layout check, pinned maps)
//! - [`flow`]: polling the flow table, pairing directions into conversations
//! - [`features`]: per-source and per-destination windows
//! - [`detect`]: alerts, rules, baselines, the model and its forest
//! - [`verdict`]: what to do about an alert
//! - [`lists`] (block and allow lists, feeds) and [`sink`] (events, reports, metrics, history)
//! - [`engine`]: one pass, detect -> decide -> apply
//! - [`replay`]: captures judged through the real dataplane on their own clock
//! - [`agent`]: the run loop, its status and its HTTP API
//! - tools on top: [`lab`], [`bench`](mod@bench); and [`cli`], the only module that knows clap
pub mod addr;
pub mod clock;
pub mod error;
pub mod files;
pub mod limits;
pub mod store;
pub mod text;

pub mod dataplane;
pub mod detect;
pub mod features;
pub mod flow;
pub mod verdict;

pub mod engine;
pub mod lists;
pub mod sink;

pub mod replay;

pub mod agent;

pub mod bench;
pub mod lab;

pub mod cli;

pub use error::{Error, Result};
