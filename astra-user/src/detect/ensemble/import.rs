//! The files other libraries write: `tools/sklearn_export.py`'s export of a random forest or
//! extra trees, and XGBoost's JSON model. Both become an [`EnsembleFile`], validated by
//! [`TreeEnsemble::from_file`] like Astra's own.
use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::detect::forest::threshold_f32;

/// The `format` field `tools/sklearn_export.py` writes for tree-ensemble classifiers.
pub const SKLEARN_FORMAT: &str = "sklearn-tree-ensemble";
pub const SKLEARN_FORMAT_VERSION: u32 = 1;

pub(super) fn any(text: &str) -> Result<TreeEnsemble, EnsembleError> {
    let v: Value = serde_json::from_str(text).map_err(|e| EnsembleError::Parse(e.to_string()))?;
    match v.get("format").and_then(Value::as_str) {
        Some(FORMAT) => TreeEnsemble::from_json(text),
        Some(SKLEARN_FORMAT) => sklearn(v),
        Some(other) => Err(EnsembleError::Unsupported(format!(
            "format {:?}: this reads {FORMAT:?}, {SKLEARN_FORMAT:?} and XGBoost's JSON models",
            crate::text::excerpt(other)
        ))),
        None if v.get("learner").is_some() => xgboost(v),
        None => Err(EnsembleError::Parse(
            "neither an Astra, a tools/sklearn_export.py nor an XGBoost model (no \"format\", no \"learner\")"
                .into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SklearnFile {
    #[allow(dead_code)]
    format: String,
    format_version: u32,
    kind: Kind,
    sklearn_version: String,
    n_features_in: usize,
    feature_names_in: Option<Vec<String>>,
    classes: Vec<Value>,
    estimators: Vec<SklearnTree>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SklearnTree {
    children_left: Vec<i64>,
    children_right: Vec<i64>,
    feature: Vec<i64>,
    threshold: Vec<f64>,
    /// Per node, the class weights (`tree_.value[node][0]`).
    value: Vec<Vec<f64>>,
}

fn sklearn(v: Value) -> Result<TreeEnsemble, EnsembleError> {
    let f: SklearnFile =
        serde_json::from_value(v).map_err(|e| EnsembleError::Parse(e.to_string()))?;
    if f.format_version != SKLEARN_FORMAT_VERSION {
        return Err(EnsembleError::Unsupported(format!(
            "{SKLEARN_FORMAT} format_version {} (this build reads {SKLEARN_FORMAT_VERSION})",
            f.format_version
        )));
    }
    if f.kind == Kind::GradientBoosting {
        return Err(EnsembleError::Unsupported(
            "scikit-learn's gradient boosting: export XGBoost's model, or a random forest".into(),
        ));
    }
    let classes: Vec<String> = f.classes.iter().map(label).collect();
    let nc = classes.len();
    let mut trees = Vec::with_capacity(f.estimators.len());
    for (t, e) in f.estimators.into_iter().enumerate() {
        let mut value = Vec::with_capacity(e.value.len() * nc);
        for (node, w) in e.value.iter().enumerate() {
            if w.len() != nc {
                return Err(EnsembleError::Invalid(format!(
                    "tree {t}, node {node}: {} class weights for {nc} classes",
                    w.len()
                )));
            }
            // DecisionTreeClassifier.predict_proba: the weights over their sum, unless 0.
            let sum: f64 = w.iter().sum();
            let sum = if sum == 0.0 { 1.0 } else { sum };
            value.extend(w.iter().map(|x| x / sum));
        }
        // sklearn's leaves have feature and threshold -2; a split compares float32(x) with a
        // float64 threshold, which float32's largest value at or below it answers alike.
        let threshold = e
            .threshold
            .iter()
            .zip(&e.children_left)
            .map(|(&t, &l)| if l < 0 { 0.0 } else { threshold_f32(t) })
            .collect();
        let feature = e
            .feature
            .iter()
            .zip(&e.children_left)
            .map(|(&f, &l)| if l < 0 { 0 } else { f })
            .collect();
        trees.push(TreeArrays {
            children_left: e.children_left,
            children_right: e.children_right,
            feature,
            threshold,
            value,
            group: 0,
        });
    }
    TreeEnsemble::from_file(EnsembleFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        kind: f.kind,
        link: Link::Average,
        origin: format!("scikit-learn {}", crate::text::excerpt(&f.sklearn_version)),
        classes,
        feature_names: names(f.feature_names_in, f.n_features_in)?,
        base_margin: Vec::new(),
        trees,
    })
}

/// A class label as text: sklearn's may be numbers or strings.
fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn names(given: Option<Vec<String>>, n: usize) -> Result<Vec<String>, EnsembleError> {
    match given {
        Some(names) if !names.is_empty() => {
            if names.len() != n {
                return Err(EnsembleError::Invalid(format!(
                    "{} feature names for {n} features",
                    names.len()
                )));
            }
            Ok(names)
        }
        _ => Ok((0..n).map(|i| format!("f{i}")).collect()),
    }
}

/// A field of XGBoost's model, or a parse error naming its path.
fn at<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, EnsembleError> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .ok_or_else(|| EnsembleError::Parse(format!("XGBoost model without {}", path.join("."))))
}

/// XGBoost writes most numbers of its parameters as strings ("3", "5E-1", "[5E-1,2E-1]").
fn numbers(v: &Value, what: &str) -> Result<Vec<f32>, EnsembleError> {
    let bad = || EnsembleError::Parse(format!("XGBoost {what}: {v}"));
    match v {
        Value::String(s) => s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.trim().parse::<f32>().map_err(|_| bad()))
            .collect(),
        Value::Number(n) => Ok(vec![n.as_f64().ok_or_else(bad)? as f32]),
        _ => Err(bad()),
    }
}

#[derive(Deserialize)]
struct XgbTree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f32>,
    #[serde(default)]
    split_type: Vec<i64>,
}

fn xgboost(v: Value) -> Result<TreeEnsemble, EnsembleError> {
    let learner = at(&v, &["learner"])?;
    let booster = at(learner, &["gradient_booster"])?;
    let name = at(booster, &["name"])?.as_str().unwrap_or("");
    if name != "gbtree" {
        return Err(EnsembleError::Unsupported(format!(
            "XGBoost booster {:?}: only gbtree",
            crate::text::excerpt(name)
        )));
    }
    let objective = at(learner, &["objective", "name"])?.as_str().unwrap_or("");
    let params = at(learner, &["learner_model_param"])?;
    let count = |k: &str| -> Result<usize, EnsembleError> {
        let n = numbers(at(params, &[k])?, k)?;
        Ok(n.first().copied().unwrap_or(0.0) as usize)
    };
    let (num_class, num_feature) = (count("num_class")?, count("num_feature")?);
    if count("num_target").unwrap_or(1) > 1 {
        return Err(EnsembleError::Unsupported(
            "XGBoost multi-target models".into(),
        ));
    }
    let base = numbers(at(params, &["base_score"])?, "base_score")?;
    let (link, classes, base_margin) = match objective {
        "binary:logistic" => {
            let p = *base
                .first()
                .ok_or_else(|| EnsembleError::Parse("empty base_score".into()))?;
            if !(p > 0.0 && p < 1.0) {
                return Err(EnsembleError::Invalid(format!(
                    "binary:logistic base_score {p} is no probability"
                )));
            }
            // XGBoost's ProbToMargin for the logistic loss, in float32.
            (Link::Logistic, 2, vec![-(1.0f32 / p - 1.0).ln()])
        }
        "multi:softprob" | "multi:softmax" => {
            if num_class < 3 {
                return Err(EnsembleError::Invalid(format!(
                    "{objective} with num_class {num_class}"
                )));
            }
            let margin = match base.len() {
                1 => vec![base[0]; num_class],
                n if n == num_class => base,
                n => {
                    return Err(EnsembleError::Invalid(format!(
                        "{n} base scores for {num_class} classes"
                    )));
                }
            };
            (Link::Softmax, num_class, margin)
        }
        other => {
            return Err(EnsembleError::Unsupported(format!(
                "XGBoost objective {:?}: binary:logistic, multi:softprob or multi:softmax",
                crate::text::excerpt(other)
            )));
        }
    };
    let model = at(booster, &["model"])?;
    let info: Vec<u32> = serde_json::from_value(at(model, &["tree_info"])?.clone())
        .map_err(|e| EnsembleError::Parse(format!("tree_info: {e}")))?;
    let raw: Vec<XgbTree> = serde_json::from_value(at(model, &["trees"])?.clone())
        .map_err(|e| EnsembleError::Parse(format!("trees: {e}")))?;
    if info.len() != raw.len() {
        return Err(EnsembleError::Invalid(format!(
            "{} trees, {} entries in tree_info",
            raw.len(),
            info.len()
        )));
    }
    let mut trees = Vec::with_capacity(raw.len());
    for (t, (tree, group)) in raw.into_iter().zip(info).enumerate() {
        if tree.split_type.iter().any(|&s| s != 0) {
            return Err(EnsembleError::Unsupported(format!(
                "tree {t} has categorical splits"
            )));
        }
        let n = tree.left_children.len();
        if tree.split_conditions.len() != n || tree.split_indices.len() != n {
            return Err(EnsembleError::Invalid(format!(
                "tree {t}: {n} nodes, {} split conditions, {} split indices",
                tree.split_conditions.len(),
                tree.split_indices.len()
            )));
        }
        let leaf = |i: usize| tree.left_children[i] < 0;
        // XGBoost sends a row left where float32(x) < condition: the float32 just below
        // answers alike with <=. At a leaf the condition is the leaf's value.
        let threshold = (0..n)
            .map(|i| {
                if leaf(i) {
                    0.0
                } else {
                    tree.split_conditions[i].next_down()
                }
            })
            .collect();
        let value = (0..n)
            .map(|i| {
                if leaf(i) {
                    f64::from(tree.split_conditions[i])
                } else {
                    0.0
                }
            })
            .collect();
        let feature = (0..n)
            .map(|i| if leaf(i) { 0 } else { tree.split_indices[i] })
            .collect();
        trees.push(TreeArrays {
            children_left: tree.left_children,
            children_right: tree.right_children,
            feature,
            threshold,
            value,
            group: if link == Link::Logistic { 0 } else { group },
        });
    }
    let given: Option<Vec<String>> = learner
        .get("feature_names")
        .and_then(|f| serde_json::from_value(f.clone()).ok());
    let version = v
        .get("version")
        .and_then(|v| serde_json::from_value::<Vec<u32>>(v.clone()).ok())
        .map_or("?".into(), |v| {
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
        });
    TreeEnsemble::from_file(EnsembleFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        kind: Kind::GradientBoosting,
        link,
        origin: format!("XGBoost {version}"),
        classes: (0..classes).map(|c| c.to_string()).collect(),
        feature_names: names(given, num_feature)?,
        base_margin,
        trees,
    })
}
