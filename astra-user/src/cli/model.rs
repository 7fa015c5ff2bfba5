//! `astra model ...`: the isolation-forest model's status, training, import and contents.
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Serialize;

use super::render::{fmt_secs, fmt_time, print_json};
use crate::{
    agent::status::AgentStatus,
    clock::now_unix,
    error::{Error, Result},
};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Whether a model exists, its age and origin, and what the running agent is doing.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Train a model from the agent's saved training rows (or a CSV with --rows) and save
    /// it; a running agent picks it up at its next poll.
    Train {
        /// CSV with a header of the feature names; default <state-dir>/training.csv.
        #[arg(long, value_name = "FILE")]
        rows: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        n_estimators: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print the saved model's parameters and trees summary.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Use a scikit-learn IsolationForest exported with tools/sklearn_export.py.
    ImportSklearn {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Serialize)]
struct ModelShow {
    path: PathBuf,
    origin: String,
    trained_at: u64,
    rows: usize,
    n_estimators: usize,
    max_samples: usize,
    offset: f64,
    features: Vec<String>,
}

pub fn run(state_dir: &Path, cmd: ModelCommand) -> Result<()> {
    use crate::detect::model::{
        MODEL_FILE, ModelConfig, ModelFile, TRAINING_FILE, read_rows, train,
    };
    let path = state_dir.join(MODEL_FILE);
    if state_dir.exists() && !state_dir.is_dir() {
        return Err(Error::io(
            state_dir,
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    match cmd {
        ModelCommand::Status { json } => {
            let saved = path.exists().then(|| ModelFile::read(&path)).transpose()?;
            let agent = AgentStatus::read(state_dir)
                .filter(AgentStatus::alive)
                .and_then(|s| s.model);
            if json {
                return print_json(&serde_json::json!({
                    "model_file": path,
                    "saved": saved.as_ref().map(|m| serde_json::json!({
                        "origin": m.origin, "trained_at": m.trained_at, "rows": m.rows,
                        "age_s": now_unix().saturating_sub(m.trained_at),
                    })),
                    "agent": agent,
                }));
            }
            match &saved {
                Some(m) => println!(
                    "model:   {} ({}, trained {} ago on {} rows)",
                    path.display(),
                    m.origin,
                    fmt_secs(now_unix().saturating_sub(m.trained_at)),
                    m.rows
                ),
                None => println!("model:   none saved yet ({})", path.display()),
            }
            match agent {
                Some(a) => {
                    let mut line = format!("agent:   {}", a.state);
                    if let Some(s) = a.learning_remaining_s {
                        line += &format!(", first model in {}", fmt_secs(s));
                    }
                    if let Some(s) = a.next_retrain_s {
                        line += &format!(", next retrain in {}", fmt_secs(s));
                    }
                    println!("{line} ({} training rows collected)", a.rows_collected);
                }
                None => println!("agent:   not running"),
            }
            Ok(())
        }
        ModelCommand::Train {
            rows,
            n_estimators,
            seed,
            json,
        } => {
            let rows_path = rows.unwrap_or_else(|| state_dir.join(TRAINING_FILE));
            let data = read_rows(&rows_path)?;
            let cfg = ModelConfig {
                n_estimators,
                seed,
                ..ModelConfig::default()
            };
            let m = train(&data, &cfg)?;
            std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
            m.write(&path)?;
            if json {
                return print_json(&serde_json::json!({
                    "model_file": path, "rows": m.rows, "n_estimators": n_estimators,
                }));
            }
            println!(
                "trained on {} rows from {}; saved {}",
                m.rows,
                rows_path.display(),
                path.display()
            );
            Ok(())
        }
        ModelCommand::Show { json } => {
            if !path.exists() {
                return Err(Error::Usage(format!(
                    "no model saved at {}",
                    path.display()
                )));
            }
            let m = ModelFile::read(&path)?;
            let out = ModelShow {
                path: path.clone(),
                origin: m.origin.clone(),
                trained_at: m.trained_at,
                rows: m.rows,
                n_estimators: m.forest.n_estimators(),
                max_samples: m.forest.max_samples(),
                offset: m.forest.offset(),
                features: crate::features::FEATURE_NAMES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            if json {
                return print_json(&out);
            }
            println!("model:        {}", out.path.display());
            println!("origin:       {}", out.origin);
            println!(
                "trained:      {} on {} rows",
                fmt_time(out.trained_at),
                out.rows
            );
            println!(
                "trees:        {} (max_samples {})",
                out.n_estimators, out.max_samples
            );
            println!("offset:       {}", out.offset);
            println!("features:     {}", out.features.join(", "));
            Ok(())
        }
        ModelCommand::ImportSklearn { file } => {
            let text =
                crate::limits::read_text_capped(&file, crate::limits::MODEL_FILE, "model file")?;
            let forest = crate::detect::forest::IsolationForest::from_sklearn_json(&text)
                .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
            crate::detect::model::check_features(&forest, &file)?;
            let m = ModelFile {
                format: crate::detect::model::MODEL_FORMAT,
                trained_at: now_unix(),
                rows: forest.max_samples(),
                origin: "sklearn".into(),
                forest,
                feature_max: Vec::new(),
            };
            std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
            m.write(&path)?;
            println!(
                "imported {} ({} trees); saved {}; a running agent uses it from its next poll",
                file.display(),
                m.forest.n_estimators(),
                path.display()
            );
            Ok(())
        }
    }
}
