//! Rule detectors. Each rule reads the window aggregates from [`crate::features`] and turns a
//! crossed threshold into an [`Alert`] with a confidence that grows with how far the threshold
//! was crossed, capped when the evidence is of the kind an attacker can forge cheaply.
//!
//! `alert.rs` is the alert model, `rules.rs` the rules, `baseline.rs` the per-destination
//! baselines the exfiltration rule compares against; `model.rs` runs the isolation forest's
//! life (train, load, score, retrain) and `forest/` is the forest itself; `ensemble/` scores the
//! tree-ensemble classifiers (random forests, extra trees, gradient boosting) imported from
//! scikit-learn and XGBoost.

mod alert;
mod baseline;
pub mod classify;
pub mod ensemble;
pub mod forest;
pub mod model;
pub mod predict;
mod rules;

pub use self::{alert::*, baseline::*, rules::*};

#[cfg(test)]
mod tests;
