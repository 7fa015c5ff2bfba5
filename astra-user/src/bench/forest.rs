//! `forest`: the native isolation forest against scikit-learn, training and scoring the same
//! rows.
use std::{path::Path, process::Command, time::Instant};

use ndarray::Array2;

use super::*;
use crate::{
    detect::forest::{ForestParams, IsolationForest},
    error::{Error, Result},
    features::FEATURE_NAMES,
};

/// Deterministic rows shaped like Astra's features: a few clusters plus outliers.
pub(super) fn forest_data(rows: usize, seed: u64) -> Array2<f64> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let cols = FEATURE_NAMES.len();
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        let cluster = (r % 3) as f64;
        let base = (c as f64 + 1.0) * (cluster + 1.0) * 10.0;
        if r % 97 == 0 {
            base * 20.0 * next()
        } else {
            base + next() * base * 0.2
        }
    })
}

/// Training time and scoring rate, Astra's forest against scikit-learn's on the same data and
/// settings, both single-threaded.
pub fn forest(out: &mut Vec<Measurement>) -> Result<()> {
    let train = forest_data(20_000, 7);
    let score = forest_data(100_000, 11);
    let names = FEATURE_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let params = ForestParams::default();
    let mut fits = Vec::new();
    let mut model = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        model = Some(
            IsolationForest::fit(train.view(), &params, names.clone())
                .map_err(|e| Error::Usage(e.to_string()))?,
        );
        fits.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let model = model.expect("fitted");
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let s = model
            .score_samples(score.view())
            .map_err(|e| Error::Usage(e.to_string()))?;
        std::hint::black_box(s);
        rates.push(score.nrows() as f64 / t.elapsed().as_secs_f64());
    }
    let (fit_ms, rate) = (median(fits), median(rates));
    match sklearn(&train, &score) {
        Ok((sk_fit_ms, sk_rate)) => {
            out.push(m(
                "forest training, 20k x 14, 100 trees",
                fit_ms,
                "ms",
                Some(("scikit-learn IsolationForest.fit", sk_fit_ms)),
                "-",
            ));
            out.push(m(
                "forest scoring, single thread",
                rate,
                "rows/s",
                Some(("scikit-learn score_samples", sk_rate)),
                ">= 4x scikit-learn",
            ));
        }
        Err(e) => {
            eprintln!("scikit-learn comparison skipped: {e}");
            out.push(m(
                "forest training, 20k x 14, 100 trees",
                fit_ms,
                "ms",
                None,
                "-",
            ));
            out.push(m(
                "forest scoring, single thread",
                rate,
                "rows/s",
                None,
                ">= 4x scikit-learn",
            ));
        }
    }
    Ok(())
}

pub(super) fn write_csv(path: &Path, x: &Array2<f64>) -> Result<()> {
    let mut s = String::with_capacity(x.len() * 12);
    for row in x.rows() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.17e}")).collect();
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| Error::io(path, e))
}

pub(super) const SKLEARN_TIMING: &str = r#"
import sys, time, numpy as np
from sklearn.ensemble import IsolationForest
train = np.loadtxt(sys.argv[1], delimiter=",")
score = np.loadtxt(sys.argv[2], delimiter=",")
runs = int(sys.argv[3])
fits, rates = [], []
for _ in range(runs):
    t = time.perf_counter(); m = IsolationForest(n_estimators=100, random_state=0, n_jobs=1).fit(train)
    fits.append((time.perf_counter() - t) * 1e3)
for _ in range(runs):
    t = time.perf_counter(); m.score_samples(score)
    rates.append(len(score) / (time.perf_counter() - t))
print(float(np.median(fits)), float(np.median(rates)))
"#;

/// Why there is no python with scikit-learn to compare against.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("no python3 on PATH")]
    NoPython,
    #[error("cannot run {python} -m pip: {cause}")]
    Pip {
        python: &'static str,
        cause: std::io::Error,
    },
    #[error("{packages}: not importable, and `pip install` failed: {last_line}")]
    NotInstalled { packages: String, last_line: String },
}

/// The python interpreter with scikit-learn importable, installing scikit-learn with pip when
/// it is missing; or why there is none.
pub fn python_with_sklearn() -> std::result::Result<String, PythonError> {
    python_with(&["scikit-learn"], "import sklearn, joblib, numpy")
}

/// The same with XGBoost as well (its CPU-only wheel, a tenth of the size of the full one).
pub fn python_with_xgboost() -> std::result::Result<String, PythonError> {
    python_with(
        &["scikit-learn", "xgboost-cpu"],
        "import sklearn, joblib, numpy, xgboost",
    )
}

/// The python interpreter where `imports` runs, installing `packages` with pip when it does
/// not; or why there is none.
fn python_with(packages: &[&str], imports: &str) -> std::result::Result<String, PythonError> {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or(PythonError::NoPython)?;
    let importable = || {
        Command::new(python)
            .args(["-c", imports])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if importable() {
        return Ok(python.to_string());
    }
    eprintln!(
        "{} missing; installing with {python} -m pip",
        packages.join(", ")
    );
    let pip = |extra: &[&str]| {
        Command::new(python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages)
            .args(extra)
            .output()
            .map_err(|cause| PythonError::Pip { python, cause })
    };
    let out = pip(&[])?;
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Debian's system python refuses pip installs unless told the environment is ours.
    if !out.status.success() && stderr.contains("externally-managed-environment") {
        let out = pip(&["--break-system-packages"])?;
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    if importable() {
        Ok(python.to_string())
    } else {
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        Err(PythonError::NotInstalled {
            packages: packages.join(", "),
            last_line: last.to_owned(),
        })
    }
}

pub(super) fn sklearn(train: &Array2<f64>, score: &Array2<f64>) -> Result<(f64, f64)> {
    let python = python_with_sklearn().map_err(|e| Error::Usage(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("astra-bench-{}-sk", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let (tp, sp) = (dir.join("train.csv"), dir.join("score.csv"));
    write_csv(&tp, train)?;
    write_csv(&sp, score)?;
    let o = Command::new(&python)
        .args(["-c", SKLEARN_TIMING])
        .arg(&tp)
        .arg(&sp)
        .arg(RUNS.to_string())
        // One thread, as Astra scores on one.
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .output()
        .map_err(|e| Error::io("python3", e))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !o.status.success() {
        return Err(Error::Usage(format!(
            "python3 with scikit-learn failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>());
    match (it.next(), it.next()) {
        (Some(Ok(f)), Some(Ok(r))) => Ok((f, r)),
        _ => Err(Error::Usage(format!(
            "unexpected scikit-learn output {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forest_data_is_deterministic_and_shaped_like_the_features() {
        let a = forest_data(100, 3);
        assert_eq!(a.dim(), (100, FEATURE_NAMES.len()));
        assert_eq!(a, forest_data(100, 3));
        assert_ne!(a, forest_data(100, 4));
    }
}
