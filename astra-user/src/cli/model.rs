//! `astra model ...`: the isolation-forest model's status, training, import and contents.
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Serialize;

use super::render::{fmt_secs, fmt_time, print_json};
use crate::{
    agent::status::AgentStatus,
    clock::now_unix,
    detect::ensemble::{CLASSIFIER_FILE, TreeEnsemble},
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
    /// Use a model trained elsewhere: an IsolationForest, RandomForestClassifier or
    /// ExtraTreesClassifier exported with tools/sklearn_export.py, or an XGBoost classifier
    /// saved as JSON (`save_model("m.json")`). A forest becomes the anomaly model; a
    /// classifier is saved as <state-dir>/classifier.json.
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Score rows with the imported classifier: its class and probabilities for each row of a
    /// CSV whose header names the model's features (in any order; others are ignored).
    Classify {
        #[arg(long, value_name = "FILE")]
        rows: PathBuf,
        #[arg(long)]
        json: bool,
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
        ModelCommand::ImportSklearn { file } => import_forest(state_dir, &path, &file),
        ModelCommand::Import { file, json } => {
            let text =
                crate::limits::read_text_capped(&file, crate::limits::MODEL_FILE, "model file")?;
            if text.contains("\"sklearn-isolation-forest\"") {
                return import_forest(state_dir, &path, &file);
            }
            let model = TreeEnsemble::import(&text)
                .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
            let saved = state_dir.join(CLASSIFIER_FILE);
            std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
            crate::files::replace(&saved, model.to_json().as_bytes(), 0o644)
                .map_err(|e| Error::io(&saved, e))?;
            let f = model.file();
            if json {
                return print_json(&serde_json::json!({
                    "classifier_file": saved, "kind": f.kind, "origin": f.origin,
                    "used_by_agent": crate::detect::classify::columns(&model).is_ok(),
                    "trees": model.n_trees(), "nodes": model.n_nodes(),
                    "classes": f.classes, "features": f.feature_names,
                }));
            }
            println!(
                "imported {}: {} {}, {} trees, classes {}, features {}; saved {}",
                file.display(),
                f.origin,
                f.kind.as_str().replace('_', " "),
                model.n_trees(),
                f.classes.join(", "),
                f.feature_names.join(", "),
                saved.display()
            );
            match crate::detect::classify::columns(&model) {
                Ok(_) => println!(
                    "a running agent joins its verdict to alerts from its next poll; \
                     `astra model classify --rows FILE.csv` scores rows with it"
                ),
                Err(why) => println!(
                    "the agent will not use it ({why}); `astra model classify --rows FILE.csv` scores rows with it"
                ),
            }
            Ok(())
        }
        ModelCommand::Classify { rows, json } => classify(state_dir, &rows, json),
    }
}

/// The imported classifier's verdict on every row of a CSV.
fn classify(state_dir: &Path, rows: &Path, json: bool) -> Result<()> {
    let saved = state_dir.join(CLASSIFIER_FILE);
    if !saved.exists() {
        return Err(Error::Usage(format!(
            "no classifier at {}: import one with `astra model import FILE`",
            saved.display()
        )));
    }
    let text = crate::limits::read_text_capped(&saved, crate::limits::MODEL_FILE, "classifier")?;
    let model = TreeEnsemble::from_json(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", saved.display())))?;
    let x = read_csv(rows, model.feature_names())?;
    let proba = model
        .predict_proba(x.view())
        .map_err(|e| Error::Usage(format!("{}: {e}", rows.display())))?;
    let classes = model.classes();
    let best = |p: ndarray::ArrayView1<'_, f64>| {
        p.iter().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
    };
    if json {
        let out: Vec<serde_json::Value> = proba
            .rows()
            .into_iter()
            .map(|p| {
                let (i, v) = best(p);
                let all: serde_json::Map<String, serde_json::Value> = classes
                    .iter()
                    .zip(p.iter())
                    .map(|(c, &v)| (c.clone(), v.into()))
                    .collect();
                serde_json::json!({"class": classes[i], "probability": v, "probabilities": all})
            })
            .collect();
        return print_json(&out);
    }
    let mut t = super::render::table(&["row", "class", "probability"]);
    for (r, p) in proba.rows().into_iter().enumerate() {
        let (i, v) = best(p);
        t.add_row(vec![
            (r + 1).to_string(),
            classes[i].clone(),
            format!("{v:.4}"),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// The columns of a CSV named by `features`, in that order, as rows of numbers.
fn read_csv(path: &Path, features: &[String]) -> Result<ndarray::Array2<f64>> {
    let text = crate::limits::read_text_capped(path, crate::limits::ROWS_FILE, "rows file")?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let columns = features
        .iter()
        .map(|f| {
            header.iter().position(|h| h == f).ok_or_else(|| {
                Error::Usage(format!(
                    "{}: no column {f:?} (the model's features: {})",
                    path.display(),
                    features.join(", ")
                ))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let mut values = Vec::new();
    let mut n = 0;
    for (l, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        for (&c, f) in columns.iter().zip(features) {
            let v = cells
                .get(c)
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{} line {}: {f} is not a number",
                        path.display(),
                        l + 2
                    ))
                })?;
            values.push(v);
        }
        n += 1;
    }
    ndarray::Array2::from_shape_vec((n, features.len()), values)
        .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// An isolation forest from tools/sklearn_export.py, as the anomaly model.
fn import_forest(state_dir: &Path, path: &Path, file: &Path) -> Result<()> {
    use crate::detect::model::ModelFile;
    let text = crate::limits::read_text_capped(file, crate::limits::MODEL_FILE, "model file")?;
    let forest = crate::detect::forest::IsolationForest::from_sklearn_json(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
    crate::detect::model::check_features(&forest, file)?;
    let m = ModelFile {
        format: crate::detect::model::MODEL_FORMAT,
        trained_at: now_unix(),
        rows: forest.max_samples(),
        origin: "sklearn".into(),
        forest,
        feature_max: Vec::new(),
    };
    std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
    m.write(path)?;
    println!(
        "imported {} ({} trees); saved {}; a running agent uses it from its next poll",
        file.display(),
        m.forest.n_estimators(),
        path.display()
    );
    Ok(())
}
