//! The isolation-forest model's life: learn a baseline from live traffic (or load a saved or
//! imported model), score sources, and retrain on a schedule from recent traffic that raised
//! no alert. The model and its training rows live in the state dir, so `astra model train` and
//! `astra model import-sklearn` can replace the model while the agent runs.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    clock::now_unix,
    detect::forest::{Contamination, ForestParams, IsolationForest, MaxSamples},
    error::{Error, Result},
    features::FEATURE_NAMES,
};

pub const MODEL_FILE: &str = "model.json";
pub const TRAINING_FILE: &str = "training.csv";
pub const MODEL_FORMAT: u32 = 1;
/// Fewer rows than this make a forest of near-empty trees: keep learning.
pub const MIN_TRAINING_ROWS: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Score sources with a model at all.
    pub enabled: bool,
    /// How long to learn from live traffic before the first model, when none is saved.
    #[serde(with = "humantime_serde")]
    pub learn_for: Duration,
    /// Retrain from recent alert-free traffic this often.
    #[serde(with = "humantime_serde")]
    pub retrain_every: Duration,
    /// Anomaly score (0..1) at which a source raises an `anomaly` alert.
    pub anomaly_threshold: f64,
    /// A model trained on fewer rows scores (metrics, evidence) but raises no alerts of its
    /// own: a baseline of a few polls makes everything that follows look unusual.
    pub min_rows_to_alert: usize,
    /// Consecutive polls a source must score at or above the threshold before it raises an
    /// alert: one odd poll of an ordinary host is noise, a source that stays odd is news.
    pub anomaly_polls: u32,
    /// A feature this many times above its largest training value marks a source as novel:
    /// an isolation forest cannot tell "far beyond anything seen" from "just beyond the edge"
    /// (every value past the training range takes the same branches), so novelty is checked
    /// separately and lowers the score needed to alert to `novelty_min_score`.
    pub novelty_factor: f64,
    pub novelty_min_score: f64,
    /// Training rows kept (the most recent).
    pub max_rows: usize,
    /// Rows taken per poll at most, so a burst of new sources cannot flood the sample.
    pub rows_per_poll: usize,
    pub n_estimators: usize,
    pub seed: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            learn_for: Duration::from_secs(600),
            retrain_every: Duration::from_secs(6 * 3600),
            anomaly_threshold: 0.65,
            min_rows_to_alert: 500,
            anomaly_polls: 2,
            novelty_factor: 10.0,
            novelty_min_score: 0.55,
            max_rows: 20_000,
            rows_per_poll: 64,
            n_estimators: 100,
            seed: 42,
        }
    }
}

/// What is saved in `<state-dir>/model.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelFile {
    pub format: u32,
    pub trained_at: u64,
    pub rows: usize,
    /// "native" (trained by astra) or "sklearn" (imported).
    pub origin: String,
    pub forest: IsolationForest,
    /// Largest value of each feature in the training rows (empty for imported models).
    #[serde(default)]
    pub feature_max: Vec<f64>,
}

impl ModelFile {
    pub fn read(path: &Path) -> Result<ModelFile> {
        let text = crate::limits::read_text_capped(path, crate::limits::MODEL_FILE, "model file")?;
        let m: ModelFile = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "{} is not a valid astra model: {e}",
                path.display()
            ))
        })?;
        if m.format != MODEL_FORMAT {
            return Err(Error::Usage(format!(
                "{} has model format {}, this astra reads {MODEL_FORMAT}",
                path.display(),
                m.format
            )));
        }
        check_features(&m.forest, path)?;
        Ok(m)
    }

    /// Writes atomically (temp file and rename), so the agent never reads half a model.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).expect("model serialises");
        crate::files::replace(path, &text, crate::files::PRIVATE).map_err(|e| Error::io(path, e))
    }
}

/// A model scores Astra's feature vector: same count, and same names where it has names.
pub fn check_features(f: &IsolationForest, origin: &Path) -> Result<()> {
    if f.n_features() != FEATURE_NAMES.len() {
        return Err(Error::Usage(format!(
            "{} expects {} features, astra produces {} ({})",
            origin.display(),
            f.n_features(),
            FEATURE_NAMES.len(),
            FEATURE_NAMES.join(", ")
        )));
    }
    let names = f.feature_names();
    if !names.is_empty()
        && !names.iter().all(|n| n.is_empty())
        && names.iter().map(String::as_str).ne(FEATURE_NAMES)
    {
        return Err(Error::Usage(format!(
            "{} was trained on features [{}], astra produces [{}]",
            origin.display(),
            names.join(", "),
            FEATURE_NAMES.join(", ")
        )));
    }
    Ok(())
}

/// Fits a forest on `rows` with the configured parameters.
pub fn train(rows: &[[f64; FEATURE_NAMES.len()]], cfg: &ModelConfig) -> Result<ModelFile> {
    if rows.len() < MIN_TRAINING_ROWS {
        return Err(Error::Usage(format!(
            "{} training rows, at least {MIN_TRAINING_ROWS} needed",
            rows.len()
        )));
    }
    let x = Array2::from_shape_vec(
        (rows.len(), FEATURE_NAMES.len()),
        rows.iter().flatten().copied().collect(),
    )
    .expect("rows have the feature count");
    let params = ForestParams {
        n_estimators: cfg.n_estimators,
        max_samples: MaxSamples::Auto,
        contamination: Contamination::Auto,
        seed: cfg.seed,
    };
    let names = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
    let forest = IsolationForest::fit(x.view(), &params, names)
        .map_err(|e| Error::Usage(format!("training failed: {e}")))?;
    let mut feature_max = vec![f64::MIN; FEATURE_NAMES.len()];
    for r in rows {
        for (m, v) in feature_max.iter_mut().zip(r) {
            *m = m.max(*v);
        }
    }
    Ok(ModelFile {
        format: MODEL_FORMAT,
        trained_at: now_unix(),
        rows: rows.len(),
        origin: "native".into(),
        forest,
        feature_max,
    })
}

pub fn write_rows(path: &Path, rows: &VecDeque<[f64; FEATURE_NAMES.len()]>) -> Result<()> {
    let mut text = FEATURE_NAMES.join(",");
    text.push('\n');
    for r in rows {
        let line: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        text.push_str(&line.join(","));
        text.push('\n');
    }
    crate::files::replace(path, text.as_bytes(), crate::files::PRIVATE)
        .map_err(|e| Error::io(path, e))
}

pub fn read_rows(path: &Path) -> Result<Vec<[f64; FEATURE_NAMES.len()]>> {
    if !path.exists() {
        return Err(Error::Usage(format!(
            "no training data at {}: the agent writes it after learning (or give one with --rows)",
            path.display()
        )));
    }
    let text =
        crate::limits::read_text_capped(path, crate::limits::ROWS_FILE, "training rows file")?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if header.split(',').ne(FEATURE_NAMES) {
        return Err(Error::Usage(format!(
            "{}: header must be {}",
            path.display(),
            FEATURE_NAMES.join(",")
        )));
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let mut row = [0.0; FEATURE_NAMES.len()];
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != row.len() {
            return Err(Error::Usage(format!(
                "{} line {}: {} values, expected {}",
                path.display(),
                i + 2,
                cells.len(),
                row.len()
            )));
        }
        for (slot, c) in row.iter_mut().zip(cells) {
            *slot = c.trim().parse().map_err(|_| {
                Error::Usage(format!(
                    "{} line {}: {c:?} is not a number",
                    path.display(),
                    i + 2
                ))
            })?;
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A feature far above anything in the training rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Novelty {
    pub feature: &'static str,
    pub value: f64,
    pub trained_max: f64,
    pub ratio: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// Anomaly score, 0..1, higher = more anomalous.
    pub score: f64,
    pub novelty: Option<Novelty>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// "disabled", "learning" or "scoring".
    pub state: String,
    pub origin: Option<String>,
    pub trained_at: Option<u64>,
    pub trained_rows: Option<usize>,
    pub rows_collected: usize,
    pub learning_remaining_s: Option<u64>,
    pub next_retrain_s: Option<u64>,
    /// The last pass's forest scores in [`SCORE_BINS`] equal bins over 0..1 (empty before
    /// a model scores).
    #[serde(default)]
    pub score_histogram: Vec<u32>,
    /// The score at which a source counts as anomalous.
    #[serde(default)]
    pub threshold: f64,
}

/// Bins of [`ModelStatus::score_histogram`].
pub const SCORE_BINS: usize = 20;

/// Which of [`SCORE_BINS`] bins a score in 0..1 falls into.
pub fn score_bin(score: f64) -> usize {
    ((score.clamp(0.0, 1.0) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1)
}

/// A uniform random sample of at most `k` rows from a stream of unknown length (reservoir
/// sampling), so a pass samples its clean sources fairly without collecting them all first.
pub struct Sample {
    k: usize,
    seen: u64,
    rows: Vec<[f64; FEATURE_NAMES.len()]>,
    /// Every source's score this pass, binned.
    scores: [u32; SCORE_BINS],
}

impl Sample {
    /// Counts one source's forest score into the pass's distribution.
    pub fn score(&mut self, score: f64) {
        self.scores[score_bin(score)] += 1;
    }

    /// Offers one row; `rng` is an xorshift state.
    pub fn offer(&mut self, row: [f64; FEATURE_NAMES.len()], rng: &mut u64) {
        if self.k == 0 {
            return;
        }
        self.seen += 1;
        if self.rows.len() < self.k {
            self.rows.push(row);
            return;
        }
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let j = *rng % self.seen;
        if let Some(slot) = self.rows.get_mut(j as usize) {
            *slot = row;
        }
    }

    pub fn rows(&self) -> &[[f64; FEATURE_NAMES.len()]] {
        &self.rows
    }
}

pub struct Learner {
    cfg: ModelConfig,
    model_path: PathBuf,
    rows_path: PathBuf,
    model: Option<(ModelFile, Option<SystemTime>)>,
    rows: VecDeque<[f64; FEATURE_NAMES.len()]>,
    started: Instant,
    trained: Option<Instant>,
    /// The last pass's score distribution.
    scores: [u32; SCORE_BINS],
    /// Set from outside the poll thread (`POST /api/v1/model/train`): train at the next pass.
    train_requested: bool,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Learner {
    pub fn new(cfg: ModelConfig, state_dir: &Path) -> Self {
        let mut l = Self {
            model_path: state_dir.join(MODEL_FILE),
            rows_path: state_dir.join(TRAINING_FILE),
            cfg,
            model: None,
            rows: VecDeque::new(),
            started: Instant::now(),
            trained: None,
            scores: [0; SCORE_BINS],
            train_requested: false,
        };
        l.reload_if_changed();
        if let Some((m, _)) = &l.model {
            info!(origin = %m.origin, rows = m.rows, "loaded saved model; scoring from the start");
            l.trained = Some(Instant::now());
        }
        l
    }

    /// Changes the model settings (configuration reload); a trained model stays in use.
    pub fn set_config(&mut self, cfg: ModelConfig) {
        self.cfg = cfg;
    }

    /// Picks up a model replaced by `astra model train` or `import-sklearn`.
    fn reload_if_changed(&mut self) {
        let now = mtime(&self.model_path);
        if now.is_none() || self.model.as_ref().is_some_and(|(_, t)| *t == now) {
            return;
        }
        match ModelFile::read(&self.model_path) {
            Ok(m) => {
                if self.model.is_some() {
                    info!(origin = %m.origin, "model file changed; reloaded");
                }
                self.model = Some((m, now));
            }
            Err(e) => {
                warn!(error = %e, "ignoring the saved model");
                // Remember the mtime so the warning is not repeated every poll.
                if let Some((_, t)) = self.model.as_mut() {
                    *t = now;
                }
            }
        }
    }

    /// The forest's view of a feature row, once a model exists.
    pub fn assess(&self, row: &[f64]) -> Option<Assessment> {
        if !self.cfg.enabled {
            return None;
        }
        let (m, _) = self.model.as_ref()?;
        let score = m.forest.anomaly_score(row).ok()?;
        let novelty = m
            .feature_max
            .iter()
            .zip(row)
            .enumerate()
            .map(|(i, (max, v))| (i, *v, *max, *v / max.max(1.0)))
            .filter(|(_, _, _, ratio)| *ratio >= self.cfg.novelty_factor)
            .max_by(|a, b| a.3.total_cmp(&b.3))
            .map(|(i, value, max, ratio)| Novelty {
                feature: FEATURE_NAMES[i],
                value,
                trained_max: max,
                ratio,
            });
        Some(Assessment { score, novelty })
    }

    /// Whether an assessment is anomalous enough to alert on.
    pub fn is_anomalous(&self, a: &Assessment) -> bool {
        a.score >= self.cfg.anomaly_threshold
            || (a.novelty.is_some() && a.score >= self.cfg.novelty_min_score)
    }

    pub fn threshold(&self) -> f64 {
        self.cfg.anomaly_threshold
    }

    pub fn anomaly_polls(&self) -> u32 {
        self.cfg.anomaly_polls.max(1)
    }

    /// Whether the model has seen enough traffic for its scores to raise alerts.
    pub fn may_alert(&self) -> bool {
        self.model
            .as_ref()
            .is_some_and(|(m, _)| m.rows >= self.cfg.min_rows_to_alert)
    }

    /// Feeds this poll's sources into the training sample (those without alerts only, so an
    /// attack never becomes the baseline), and trains when the time has come.
    /// An empty training sample for one pass (nothing is sampled while learning is off).
    pub fn sample(&self) -> Sample {
        Sample {
            k: if self.cfg.enabled {
                self.cfg.rows_per_poll
            } else {
                0
            },
            seen: 0,
            rows: Vec::new(),
            scores: [0; SCORE_BINS],
        }
    }

    /// Adds one pass's sample of clean sources to the training rows, and retrains when due.
    pub fn observe(&mut self, sample: Sample) {
        if !self.cfg.enabled {
            return;
        }
        self.reload_if_changed();
        self.scores = sample.scores;
        for row in sample.rows {
            if self.rows.len() == self.cfg.max_rows {
                self.rows.pop_front();
            }
            self.rows.push_back(row);
        }
        let due = match (&self.model, self.trained) {
            (None, _) => self.started.elapsed() >= self.cfg.learn_for,
            (Some(_), Some(t)) => t.elapsed() >= self.cfg.retrain_every,
            (Some(_), None) => false,
        };
        let asked = std::mem::take(&mut self.train_requested);
        if (due || asked) && self.rows.len() >= MIN_TRAINING_ROWS {
            self.retrain();
        } else if asked {
            warn!(
                rows = self.rows.len(),
                needed = MIN_TRAINING_ROWS,
                "training asked for, but too few rows are collected yet"
            );
        }
    }

    /// Trains at the next pass on the rows collected so far, rather than when the schedule
    /// says (the UI's "train now").
    pub fn request_training(&mut self) {
        self.train_requested = true;
    }

    fn retrain(&mut self) {
        let rows: Vec<_> = self.rows.iter().copied().collect();
        let t0 = Instant::now();
        match train(&rows, &self.cfg) {
            Ok(m) => {
                if let Err(e) = write_rows(&self.rows_path, &self.rows) {
                    warn!(error = %e, "saving training rows");
                }
                if let Err(e) = m.write(&self.model_path) {
                    warn!(error = %e, "saving the model");
                }
                info!(
                    rows = m.rows,
                    ms = t0.elapsed().as_millis() as u64,
                    "trained the isolation forest"
                );
                self.model = Some((m, mtime(&self.model_path)));
                self.trained = Some(Instant::now());
            }
            Err(e) => warn!(error = %e, "training"),
        }
    }

    pub fn status(&self) -> ModelStatus {
        let state = if !self.cfg.enabled {
            "disabled"
        } else if self.model.is_some() {
            "scoring"
        } else {
            "learning"
        };
        let m = self.model.as_ref().map(|(m, _)| m);
        ModelStatus {
            state: state.into(),
            origin: m.map(|m| m.origin.clone()),
            trained_at: m.map(|m| m.trained_at),
            trained_rows: m.map(|m| m.rows),
            rows_collected: self.rows.len(),
            learning_remaining_s: m.is_none().then(|| {
                self.cfg
                    .learn_for
                    .saturating_sub(self.started.elapsed())
                    .as_secs()
            }),
            next_retrain_s: self
                .trained
                .map(|t| self.cfg.retrain_every.saturating_sub(t.elapsed()).as_secs()),
            score_histogram: if m.is_some() && self.cfg.enabled {
                self.scores.to_vec()
            } else {
                Vec::new()
            },
            threshold: self.cfg.anomaly_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{SourceFeatures, SourceWindow};

    fn window(conns: f64, ports: f64) -> SourceWindow {
        SourceWindow {
            features: SourceFeatures {
                conns,
                distinct_dst_ports: ports,
                distinct_dst_hosts: 1.0,
                mean_bytes_per_flow: 2000.0 + conns,
                pps: conns * 2.0,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A scratch state dir, removed at drop (they used to pile up in the temp dir).
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for Scratch {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "astra-model-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    #[test]
    fn learns_then_scores_outliers_higher_and_saves() {
        let d = dir();
        let cfg = ModelConfig {
            learn_for: Duration::ZERO,
            ..ModelConfig::default()
        };
        let mut l = Learner::new(cfg.clone(), &d);
        assert_eq!(l.status().state, "learning");
        let mut rng = 1u64;
        for poll in 0..10u32 {
            let mut sample = l.sample();
            for i in 0..20u8 {
                let w = window(f64::from(i % 5 + 1), f64::from(poll % 3 + 1));
                sample.offer(w.features.to_vec(), &mut rng);
            }
            l.observe(sample);
        }
        assert_eq!(l.status().state, "scoring");
        // Trained on 40 rows: scores, but is not trusted to raise alerts yet.
        assert!(!l.may_alert());
        let trusting = Learner::new(
            ModelConfig {
                min_rows_to_alert: 40,
                ..cfg.clone()
            },
            &d,
        );
        assert!(trusting.may_alert());
        let normal = l.assess(&window(3.0, 2.0).features.to_vec()).unwrap().score;
        let odd_a = l.assess(&window(900.0, 800.0).features.to_vec()).unwrap();
        let odd = odd_a.score;
        // 800 ports where training never saw more than 3 (the largest excess): novel, and it
        // says which feature.
        assert_eq!(
            odd_a.novelty.as_ref().map(|n| n.feature),
            Some("distinct_dst_ports")
        );
        assert!(
            l.assess(&window(3.0, 2.0).features.to_vec())
                .unwrap()
                .novelty
                .is_none()
        );
        assert!(odd > normal, "outlier {odd} vs normal {normal}");
        // Saved, and a new learner (agent restart) scores from the start.
        assert!(d.join(MODEL_FILE).exists() && d.join(TRAINING_FILE).exists());
        let l2 = Learner::new(cfg.clone(), &d);
        assert_eq!(l2.status().state, "scoring");
        assert_eq!(
            l2.assess(&window(900.0, 800.0).features.to_vec())
                .map(|a| a.score),
            Some(odd)
        );
        // The rows saved with the model are the ones it was trained on.
        let rows = read_rows(&d.join(TRAINING_FILE)).unwrap();
        assert_eq!(Some(rows.len()), l.status().trained_rows);
        let again = train(&rows, &cfg).unwrap();
        assert_eq!(
            again.forest.to_json(),
            ModelFile::read(&d.join(MODEL_FILE))
                .unwrap()
                .forest
                .to_json()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn sample_is_bounded_and_fair() {
        let l = Learner::new(
            ModelConfig {
                rows_per_poll: 10,
                ..ModelConfig::default()
            },
            &dir(),
        );
        // 1000 passes over 100 rows: each row should land in the sample about 10% of the time.
        let mut hits = [0u32; 100];
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            let mut s = l.sample();
            for i in 0..100 {
                let mut row = [0.0; FEATURE_NAMES.len()];
                row[0] = f64::from(i);
                s.offer(row, &mut rng);
            }
            assert_eq!(s.rows().len(), 10);
            for r in s.rows() {
                hits[r[0] as usize] += 1;
            }
        }
        let (min, max) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
        assert!(
            *min > 50 && *max < 160,
            "uneven sample: {min}..{max} of ~100"
        );
        // Learning off: nothing is sampled.
        let off = Learner::new(
            ModelConfig {
                enabled: false,
                ..ModelConfig::default()
            },
            &dir(),
        );
        let mut s = off.sample();
        s.offer([1.0; FEATURE_NAMES.len()], &mut rng);
        assert!(s.rows().is_empty());
    }

    #[test]
    fn too_few_rows_and_bad_files_are_clear_errors() {
        assert!(
            train(&[[0.0; 14]; 3], &ModelConfig::default())
                .unwrap_err()
                .to_string()
                .contains("at least 32")
        );
        let d = dir();
        let p = d.join(TRAINING_FILE);
        std::fs::write(&p, "a,b\n1,2\n").unwrap();
        assert!(
            read_rows(&p)
                .unwrap_err()
                .to_string()
                .contains("header must be")
        );
        std::fs::write(&p, format!("{}\n1,2\n", FEATURE_NAMES.join(","))).unwrap();
        assert!(
            read_rows(&p)
                .unwrap_err()
                .to_string()
                .contains("line 2: 2 values")
        );
        let m = d.join(MODEL_FILE);
        std::fs::write(&m, "{}").unwrap();
        assert!(
            ModelFile::read(&m)
                .unwrap_err()
                .to_string()
                .contains("not a valid astra model")
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
