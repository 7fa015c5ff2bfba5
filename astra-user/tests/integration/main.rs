//! Astra's integration tests: one binary, a module per area (as aya's integration-test crate
//! is organised), so the shared kit is compiled once and every helper is used by someone.
//! Most tests load the real programs or run the real binary, and need root: under `CI=true`
//! one that cannot run fails rather than skips (see [`kit::privileged`]).

mod kit;

mod bench;
mod classifier_parity;
mod cli;
mod crowdsec;
mod deploy;
mod detection;
mod feeds;
mod forest_parity;
mod lab;
mod netns;
mod operations;
mod prog_test_run;
mod replay;
mod ui;
