//! Parity of `astra::detect::ensemble` with scikit-learn's random forests and extra trees and
//! with XGBoost: `tools/sklearn_export.py --selftest-classifier` fits the library's model on
//! seeded rows and writes it with rows (training, fresh, and probes sitting exactly on split
//! values) and the library's own `predict_proba`; Astra imports the model and must give every
//! probability within 1e-6, and the same after saving and reading it in its own format.
//!
//! Needs python3 with scikit-learn and xgboost, installed with pip when missing; the tests
//! skip when that is impossible, and fail under CI=true / CI=1.
use std::{process::Command, sync::OnceLock};

use astra::detect::ensemble::TreeEnsemble;
use ndarray::Array2;
use serde_json::Value;

const TOLERANCE: f64 = 1e-6;

fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Result<String, astra::bench::forest::PythonError>> = OnceLock::new();
    match PYTHON.get_or_init(astra::bench::forest::python_with_xgboost) {
        Ok(python) => Some(python),
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("classifier parity cannot run, and CI forbids skipping it: {why}");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

fn selftest(library: &str, classes: usize, trees: usize) -> Option<Value> {
    let python = python()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/sklearn_export.py");
    let out = std::env::temp_dir().join(format!(
        "astra-classifier-{library}-{classes}-{}.json",
        std::process::id()
    ));
    let status = Command::new(python)
        .arg(script)
        .arg("--selftest-classifier")
        .arg(&out)
        .args(["--library", library, "--classes", &classes.to_string()])
        .args(["--n-estimators", &trees.to_string(), "--seed", "3"])
        .status()
        .expect("run sklearn_export.py");
    assert!(status.success(), "sklearn_export.py {library}: {status}");
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    Some(serde_json::from_str(&text).unwrap())
}

fn matrix(v: &Value, parse: impl Fn(&Value) -> f64) -> Array2<f64> {
    let rows = v.as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let values = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(parse)
        .collect();
    Array2::from_shape_vec((rows.len(), cols), values).unwrap()
}

fn parity(library: &str, classes: usize, trees: usize) {
    let Some(data) = selftest(library, classes, trees) else {
        return;
    };
    // Rows as repr() strings, so they arrive bit for bit.
    let x = matrix(&data["X"], |v| v.as_str().unwrap().parse().unwrap());
    let want = matrix(&data["proba"], |v| v.as_f64().unwrap());
    let model = TreeEnsemble::import(&data["model"].to_string()).unwrap();
    assert_eq!(
        model.n_trees(),
        trees
            * if library == "xgboost" && classes > 2 {
                classes
            } else {
                1
            }
    );
    assert_eq!(model.classes().len(), classes);
    let again = TreeEnsemble::from_json(&model.to_json()).unwrap();
    for (what, m) in [("imported", &model), ("saved and read", &again)] {
        let got = m.predict_proba(x.view()).unwrap();
        assert_eq!(got.dim(), want.dim());
        let worst = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let far = got
            .rows()
            .into_iter()
            .zip(want.rows())
            .filter(|(a, b)| {
                a.iter()
                    .zip(b.iter())
                    .any(|(a, b)| (a - b).abs() > TOLERANCE)
            })
            .count();
        eprintln!("{library}, {classes} classes, {what}: worst difference {worst:e}");
        assert_eq!(
            far,
            0,
            "{library} ({classes} classes, {what}): {far} of {} rows differ by more than {TOLERANCE} (worst {worst:e}; {} probes on split values)",
            x.nrows(),
            data["n_probes"]
        );
    }
}

#[test]
fn random_forest_probabilities_match_scikit_learn() {
    parity("random_forest", 3, 40);
}

#[test]
fn binary_random_forest_probabilities_match_scikit_learn() {
    parity("random_forest", 2, 20);
}

#[test]
fn extra_trees_probabilities_match_scikit_learn() {
    parity("extra_trees", 4, 30);
}

#[test]
fn binary_xgboost_probabilities_match_xgboost() {
    parity("xgboost", 2, 60);
}

#[test]
fn multiclass_xgboost_probabilities_match_xgboost() {
    parity("xgboost", 5, 40);
}

/// `astra model import` takes XGBoost's own file and `astra model classify` gives each row of
/// a CSV the class XGBoost's probabilities make most likely; bad input is one line, exit 2,
/// and changes nothing.
#[test]
fn the_cli_imports_a_classifier_and_classifies_rows() {
    use crate::kit::{cli, pin_dir, state_dir};
    let Some(data) = selftest("xgboost", 3, 20) else {
        return;
    };
    let (pin, state) = (pin_dir(), state_dir());
    let model = state.path().join("xgb.json");
    std::fs::write(&model, data["model"].to_string()).unwrap();
    let garbage = state.path().join("garbage.json");
    std::fs::write(
        &garbage,
        r#"{"learner": {"gradient_booster": {"name": "dart"}}}"#,
    )
    .unwrap();
    let m = |args: &[&str]| cli(pin.path(), state.path(), args);

    let (code, _, err) = m(&["model", "import", garbage.to_str().unwrap()]);
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
    assert!(!state.path().join("classifier.json").exists());
    let (code, out, err) = m(&["model", "import", model.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let imported: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(imported["trees"], 60, "{imported}");
    assert!(imported["origin"].as_str().unwrap().starts_with("XGBoost"));

    // The first 50 rows, columns in another order than the model's, with one extra column.
    let x = matrix(&data["X"], |v| v.as_str().unwrap().parse().unwrap());
    let want = matrix(&data["proba"], |v| v.as_f64().unwrap());
    let mut csv = String::from("extra,f5,f4,f3,f2,f1,f0\n");
    for r in 0..50 {
        let cells: Vec<String> = (0..6).rev().map(|c| format!("{:e}", x[[r, c]])).collect();
        csv += &format!("1,{}\n", cells.join(","));
    }
    let rows = state.path().join("rows.csv");
    std::fs::write(&rows, csv).unwrap();
    let (code, out, err) = m(&[
        "model",
        "classify",
        "--rows",
        rows.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let got: Value = serde_json::from_str(&out).unwrap();
    for (r, g) in got.as_array().unwrap().iter().enumerate() {
        let best = (0..3)
            .max_by(|&a, &b| want[[r, a]].total_cmp(&want[[r, b]]))
            .unwrap();
        assert_eq!(g["class"], best.to_string(), "row {r}: {g}");
    }
    std::fs::write(&rows, "f0,f1\n1,2\n").unwrap();
    let (code, _, err) = m(&["model", "classify", "--rows", rows.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no column \"f2\""), "{err}");
}
