//! Scoring a feature row on demand (`POST /api/v1/predict`, the classifier seed's API): the
//! models the agent uses, read from the state directory as they change, without a source,
//! a window or a rule.
use std::path::Path;

use serde::Serialize;

use super::{
    AttackType,
    classify::{Classifier, Verdict},
    model::{MODEL_FILE, ModelFile},
    risk_score,
};
use crate::{features::FEATURE_NAMES, files::Watched};

/// What the models make of one row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The classifier's class; without one, `anomaly` when the forest finds the row
    /// anomalous, else null (no model can say what a row is without a classifier).
    pub attack_type: Option<String>,
    /// 1-10: from the attack type and the confidence as for alerts, 1 for a benign class.
    pub risk_score: u8,
    /// The classifier's probability for its class, or the forest's score for `anomaly`.
    pub confidence: Option<f64>,
    /// The isolation forest's score (0..1, higher is odder), when a model exists.
    pub anomaly_score: Option<f64>,
    /// Whether the score is at or above the agent's anomaly threshold.
    pub is_anomaly: bool,
}

/// The forest and the classifier, each re-read when its file changes.
pub struct Predictor {
    forest: Watched<ModelFile>,
    classifier: Classifier,
}

/// Class names that mean "nothing wrong" in the seeds' and common data sets.
fn benign(class: &str) -> bool {
    matches!(
        class.to_ascii_lowercase().as_str(),
        "benign" | "normal" | "none" | "0"
    )
}

impl Predictor {
    pub fn new(state_dir: &Path) -> Self {
        let mut p = Self {
            forest: Watched::new(state_dir.join(MODEL_FILE)),
            classifier: Classifier::new(state_dir),
        };
        p.refresh();
        p
    }

    pub fn refresh(&mut self) {
        self.classifier.reload_if_changed();
        // A model that does not read scores nothing; the agent's own load says why.
        let _ = self.forest.refresh(ModelFile::read);
    }

    pub fn predict(&self, row: &[f64; FEATURE_NAMES.len()], threshold: f64) -> Prediction {
        let anomaly_score = self
            .forest
            .get()
            .and_then(|m| m.forest.anomaly_score(row).ok());
        let is_anomaly = anomaly_score.is_some_and(|s| s >= threshold);
        match self.classifier.classify(row) {
            Some(Verdict {
                class, probability, ..
            }) => {
                let risk = if benign(&class) {
                    1
                } else {
                    let t = AttackType::ALL
                        .into_iter()
                        .find(|t| t.as_str() == class)
                        .unwrap_or(AttackType::Anomaly);
                    risk_score(t, probability)
                };
                Prediction {
                    attack_type: Some(class),
                    risk_score: risk,
                    confidence: Some(probability),
                    anomaly_score,
                    is_anomaly,
                }
            }
            None if is_anomaly => Prediction {
                attack_type: Some(AttackType::Anomaly.as_str().into()),
                risk_score: risk_score(AttackType::Anomaly, anomaly_score.unwrap_or(0.0)),
                confidence: anomaly_score,
                anomaly_score,
                is_anomaly,
            },
            None => Prediction {
                attack_type: None,
                risk_score: 1,
                confidence: None,
                anomaly_score,
                is_anomaly,
            },
        }
    }
}
