//! The imported classifier's view of a source (`<state-dir>/classifier.json`, written by
//! `astra model import`): which behaviour its features look like, beside the rules' verdict.
//!
//! It advises and never decides. A rule's alert gets the classifier's class and probability
//! in its evidence; when the classifier names the alert's own attack type with probability
//! at least [`AGREE`], the risk score rises by one (the two kinds of evidence are independent);
//! when it names something else, a note says so and the rule's verdict, and so the action,
//! stand. A classifier alone raises nothing and blocks nothing: its classes are whatever its
//! trainer named them, and a model trained elsewhere has never seen this network.
//!
//! Only a classifier trained on Astra's features (any subset, by name, in any order) is used;
//! another is reported once and ignored. The file is read again when it changes.
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    Alert,
    ensemble::{CLASSIFIER_FILE, TreeEnsemble},
};
use crate::{features::FEATURE_NAMES, files::Watched};

/// The probability from which an agreeing classifier raises the risk score.
pub const AGREE: f64 = 0.8;

/// What the classifier made of a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub class: String,
    pub probability: f64,
    /// The library that trained it.
    pub origin: String,
}

struct Loaded {
    model: TreeEnsemble,
    /// For each of the model's features, its index in [`FEATURE_NAMES`].
    columns: Vec<usize>,
}

pub struct Classifier {
    loaded: Watched<Loaded>,
}

/// A classifier feature Astra does not produce.
#[derive(Debug, thiserror::Error)]
#[error("its feature {0:?} is none of Astra's ({names})", names = FEATURE_NAMES.join(", "))]
pub struct ForeignFeature(pub String);

/// Where each of `model`'s features is among Astra's, or which one Astra does not produce.
pub fn columns(model: &TreeEnsemble) -> Result<Vec<usize>, ForeignFeature> {
    model
        .feature_names()
        .iter()
        .map(|f| {
            FEATURE_NAMES
                .iter()
                .position(|n| n == f)
                .ok_or_else(|| ForeignFeature(f.clone()))
        })
        .collect()
}

impl Classifier {
    pub fn new(state_dir: &Path) -> Self {
        let mut c = Self {
            loaded: Watched::new(state_dir.join(CLASSIFIER_FILE)),
        };
        c.reload_if_changed();
        c
    }

    /// Picks up a classifier imported since the last pass.
    pub fn reload_if_changed(&mut self) {
        let read = self.loaded.refresh(|path| {
            let text =
                crate::limits::read_text_capped(path, crate::limits::MODEL_FILE, "classifier")
                    .map_err(|e| e.to_string())?;
            let model = TreeEnsemble::from_json(&text).map_err(|e| e.to_string())?;
            let columns = columns(&model).map_err(|e| e.to_string())?;
            Ok::<_, String>(Loaded { model, columns })
        });
        match (read, self.loaded.get()) {
            (Ok(true), Some(l)) => {
                info!(origin = %l.model.file().origin, trees = l.model.n_trees(), classes = ?l.model.classes(), "classifier loaded");
            }
            (Err(e), _) => {
                warn!(path = %self.loaded.path().display(), error = %e, "not using the classifier");
            }
            _ => {}
        }
    }

    /// The most likely class of a source with these features, if a usable classifier is
    /// loaded.
    pub fn classify(&self, row: &[f64; FEATURE_NAMES.len()]) -> Option<Verdict> {
        let l = self.loaded.get()?;
        let x: Vec<f64> = l.columns.iter().map(|&c| row[c]).collect();
        let x = ndarray::ArrayView2::from_shape((1, x.len()), &x).ok()?;
        let p = l.model.predict_proba(x).ok()?;
        let (best, probability) =
            p.row(0)
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |b, (i, v)| if v > b.1 { (i, v) } else { b },
                );
        Some(Verdict {
            class: l.model.classes()[best].clone(),
            probability,
            origin: l.model.file().origin.clone(),
        })
    }
}

/// Joins the classifier's verdict to a rule's alert (see the module docs).
pub fn join(a: &mut Alert, v: &Verdict) {
    let p = (v.probability * 100.0).round() / 100.0;
    if v.class == a.attack_type.as_str() {
        if v.probability >= AGREE {
            a.risk_score = (a.risk_score + 1).min(10);
            a.evidence
                .notes
                .push(format!("the classifier agrees: {} ({p})", v.class));
        }
    } else {
        a.evidence.notes.push(format!(
            "the classifier calls it {} ({p}); the rule's verdict stands",
            v.class
        ));
    }
    a.evidence.classifier = Some(v.clone());
}
