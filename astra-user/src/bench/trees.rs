//! `trees`: the tree-ensemble classifiers scored natively against the libraries that trained
//! them, on the same model and rows, each on one thread: a random forest against
//! scikit-learn's `predict_proba`, gradient-boosted trees against XGBoost's.
use std::{process::Command, time::Instant};

use ndarray::Array2;

use super::{forest::*, *};
use crate::{
    detect::ensemble::TreeEnsemble,
    error::{Error, Result},
};

/// Fits both models on the rows in argv[1] with labels in argv[2], saves them to argv[4]
/// (the forest through tools/sklearn_export.py) and argv[5], and prints the median rows/s of
/// each library's predict_proba on the rows in argv[3] over argv[6] runs.
const TIMING: &str = r#"
import json, sys, time, numpy as np
sys.path.insert(0, sys.argv[7])
import sklearn_export, xgboost
from sklearn.ensemble import RandomForestClassifier
X = np.loadtxt(sys.argv[1], delimiter=",")
y = np.loadtxt(sys.argv[2], dtype=int)
score = np.loadtxt(sys.argv[3], delimiter=",")
runs = int(sys.argv[6])
rf = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(X, y)
json.dump(sklearn_export.export(rf), open(sys.argv[4], "w"))
xgb = xgboost.XGBClassifier(n_estimators=100, max_depth=6, random_state=0, n_jobs=1, tree_method="hist").fit(X, y)
xgb.save_model(sys.argv[5])
def rate(m):
    r = []
    for _ in range(runs):
        t = time.perf_counter(); m.predict_proba(score)
        r.append(len(score) / (time.perf_counter() - t))
    return float(np.median(r))
print(rate(rf), rate(xgb))
"#;

pub fn trees(out: &mut Vec<Measurement>) -> Result<()> {
    let python = python_with_xgboost().map_err(|e| Error::Usage(e.to_string()))?;
    let train = forest_data(20_000, 7);
    let score = forest_data(100_000, 11);
    // Four classes that cut across the clusters, with one label in ten noise: a forest grown
    // to purity on them has trees thousands of nodes large and about 20 deep, as on real
    // traffic, where the clusters alone would give it stumps.
    let labels: String = (0..train.nrows())
        .map(|r| {
            let c = if r % 10 == 0 {
                (r / 10) % 4
            } else {
                ((train[[r, 0]] / 3.0).floor() as usize + (train[[r, 5]] / 5.0).floor() as usize)
                    % 4
            };
            format!("{c}\n")
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("astra-bench-{}-trees", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let p = |n: &str| dir.join(n);
    write_csv(&p("train.csv"), &train)?;
    write_csv(&p("score.csv"), &score)?;
    std::fs::write(p("labels.txt"), labels).map_err(|e| Error::io(p("labels.txt"), e))?;
    let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools");
    let o = Command::new(&python)
        .args(["-c", TIMING])
        .args([
            p("train.csv"),
            p("labels.txt"),
            p("score.csv"),
            p("rf.json"),
            p("xgb.json"),
        ])
        .arg(RUNS.to_string())
        .arg(tools)
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .output()
        .map_err(|e| Error::io("python3", e))?;
    let read = |n: &str| std::fs::read_to_string(p(n)).map_err(|e| Error::io(p(n), e));
    let models = (read("rf.json"), read("xgb.json"));
    let _ = std::fs::remove_dir_all(&dir);
    if !o.status.success() {
        return Err(Error::Usage(format!(
            "python3 with scikit-learn and xgboost failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let theirs: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let [rf_rate, xgb_rate] = theirs[..] else {
        return Err(Error::Usage(format!("timing script printed {text:?}")));
    };
    for (text, theirs, what, baseline, target) in [
        (
            models.0?,
            rf_rate,
            "random forest predict_proba (100 trees grown to purity, 4 classes, 20k training rows), single thread",
            "scikit-learn predict_proba",
            ">= 3x scikit-learn",
        ),
        (
            models.1?,
            xgb_rate,
            "gradient-boosted trees predict_proba (100 rounds x 4 classes, depth 6), single thread",
            "xgboost predict_proba",
            ">= xgboost",
        ),
    ] {
        let model = TreeEnsemble::import(&text).map_err(|e| Error::Usage(e.to_string()))?;
        out.push(m(
            what,
            ours(&model, &score)?,
            "rows/s",
            Some((baseline, theirs)),
            target,
        ));
    }
    Ok(())
}

fn ours(model: &TreeEnsemble, rows: &Array2<f64>) -> Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let p = model
            .predict_proba(rows.view())
            .map_err(|e| Error::Usage(e.to_string()))?;
        std::hint::black_box(p);
        rates.push(rows.nrows() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}
