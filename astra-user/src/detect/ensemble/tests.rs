use ndarray::array;

use super::*;

/// A stump on feature `f` at `t`: leaves `l` and `r` (class weights, or one value).
fn stump(f: i64, t: f32, l: Vec<f64>, r: Vec<f64>, group: u32) -> TreeArrays {
    let w = l.len();
    let mut value = vec![0.0; w];
    value.extend(l);
    value.extend(r);
    TreeArrays {
        children_left: vec![1, -1, -1],
        children_right: vec![2, -1, -1],
        feature: vec![f, 0, 0],
        threshold: vec![t, 0.0, 0.0],
        value,
        group,
    }
}

fn file(link: Link, classes: usize, base_margin: Vec<f32>, trees: Vec<TreeArrays>) -> EnsembleFile {
    EnsembleFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        kind: if link == Link::Average {
            Kind::RandomForest
        } else {
            Kind::GradientBoosting
        },
        link,
        origin: "test".into(),
        classes: (0..classes).map(|c| c.to_string()).collect(),
        feature_names: vec!["a".into(), "b".into()],
        base_margin,
        trees,
    }
}

#[test]
fn a_forest_averages_its_trees_probabilities() {
    let m = TreeEnsemble::from_file(file(
        Link::Average,
        2,
        vec![],
        vec![
            stump(0, 0.5, vec![1.0, 0.0], vec![0.0, 1.0], 0),
            stump(1, 0.5, vec![0.5, 0.5], vec![0.0, 1.0], 0),
        ],
    ))
    .unwrap();
    let p = m
        .predict_proba(array![[0.0, 0.0], [1.0, 1.0], [0.5, 0.7]].view())
        .unwrap();
    assert_eq!(p, array![[0.75, 0.25], [0.0, 1.0], [0.5, 0.5]]);
    // Astra's own file gives the same.
    let again = TreeEnsemble::from_json(&m.to_json()).unwrap();
    assert_eq!(
        again.predict_proba(array![[0.0, 0.0]].view()).unwrap(),
        p.slice(ndarray::s![0..1, ..])
    );
}

#[test]
fn boosting_adds_margins_per_class_then_links_them() {
    let binary = TreeEnsemble::from_file(file(
        Link::Logistic,
        2,
        vec![0.0],
        vec![
            stump(0, 0.0, vec![-1.0], vec![1.0], 0),
            stump(1, 0.0, vec![0.0], vec![1.0], 0),
        ],
    ))
    .unwrap();
    let p = binary
        .predict_proba(array![[1.0, 1.0], [-1.0, -1.0]].view())
        .unwrap();
    let s = |x: f32| f64::from(1.0 / (1.0 + (-x).exp()));
    assert!((p[[0, 1]] - s(2.0)).abs() < 1e-7 && (p[[0, 0]] + p[[0, 1]] - 1.0).abs() < 1e-7);
    assert!((p[[1, 1]] - s(-1.0)).abs() < 1e-7);
    let multi = TreeEnsemble::from_file(file(
        Link::Softmax,
        3,
        vec![0.0, 0.0, 0.0],
        vec![stump(0, 0.0, vec![0.0], vec![2.0], 2)],
    ))
    .unwrap();
    let p = multi.predict_proba(array![[1.0, 0.0]].view()).unwrap();
    let e2 = 2f64.exp();
    assert!((p[[0, 2]] - e2 / (2.0 + e2)).abs() < 1e-6, "{p}");
    assert!((p[[0, 0]] - p[[0, 1]]).abs() < 1e-12);
}

/// XGBoost sends a row left where x < condition; at the condition itself it goes right.
#[test]
fn xgboost_splits_are_strict() {
    let json = serde_json::json!({
        "learner": {
            "feature_names": [],
            "gradient_booster": {"name": "gbtree", "model": {
                "tree_info": [0],
                "trees": [{
                    "left_children": [1, -1, -1], "right_children": [2, -1, -1],
                    "split_indices": [0, 0, 0], "split_conditions": [0.5, -1.0, 1.0],
                    "split_type": [0, 0, 0], "default_left": [0, 0, 0]
                }]
            }},
            "learner_model_param": {"base_score": "[5E-1]", "num_class": "0", "num_feature": "1", "num_target": "1"},
            "objective": {"name": "binary:logistic"}
        },
        "version": [3, 2, 0]
    });
    let m = TreeEnsemble::import(&json.to_string()).unwrap();
    assert_eq!(m.file().origin, "XGBoost 3.2.0");
    let p = m
        .predict_proba(array![[0.5], [0.499_999_97], [f64::from(0.5f32.next_down())]].view())
        .unwrap();
    assert!(p[[0, 1]] > 0.7, "at the condition: right, {p}");
    assert!(p[[1, 1]] < 0.3 && p[[2, 1]] < 0.3, "below it: left, {p}");
}

#[test]
fn bad_files_and_rows_are_refused_with_the_reason() {
    let ok = || {
        file(
            Link::Average,
            2,
            vec![],
            vec![stump(0, 0.5, vec![1.0, 0.0], vec![0.0, 1.0], 0)],
        )
    };
    let mut cycle = ok();
    cycle.trees[0].children_left = vec![1, 0, -1];
    cycle.trees[0].children_right = vec![2, 0, -1];
    let e = TreeEnsemble::from_file(cycle).unwrap_err().to_string();
    assert!(e.contains("tree 0"), "{e}");
    let mut short = ok();
    short.trees[0].value.pop();
    assert!(
        TreeEnsemble::from_file(short)
            .unwrap_err()
            .to_string()
            .contains("values")
    );
    let mut margin = ok();
    margin.base_margin = vec![0.0];
    assert!(TreeEnsemble::from_file(margin).is_err());
    let mut one = ok();
    one.classes.truncate(1);
    assert!(TreeEnsemble::from_file(one).is_err());
    // A chain deeper than the bound: refused before anything walks it.
    let n = MAX_DEPTH + 2;
    let mut deep = ok();
    let t = &mut deep.trees[0];
    t.children_left = (0..n)
        .map(|i| if i + 1 < n { i as i64 + 1 } else { -1 })
        .collect();
    t.children_right = vec![-1; n];
    t.children_right[..n - 1].fill(0);
    // Every split's right child is a leaf appended after the chain.
    let mut left = t.children_left.clone();
    let mut right = Vec::new();
    for i in 0..n - 1 {
        right.push((n + i) as i64);
    }
    right.push(-1);
    left.extend(vec![-1; n - 1]);
    right.extend(vec![-1; n - 1]);
    t.children_left = left;
    t.children_right = right;
    let total = t.children_left.len();
    t.feature = vec![0; total];
    t.threshold = vec![0.5; total];
    t.value = vec![0.5; total * 2];
    let e = TreeEnsemble::from_file(deep).unwrap_err().to_string();
    assert!(e.contains("deep"), "{e}");

    let m = TreeEnsemble::from_file(ok()).unwrap();
    let e = m.predict_proba(array![[f64::NAN, 0.0]].view()).unwrap_err();
    assert!(
        matches!(
            e,
            EnsembleError::Input(ForestError::NonFinite {
                row: 0,
                column: 0,
                ..
            })
        ),
        "{e}"
    );
    let e = m.predict_proba(array![[1e300, 0.0]].view()).unwrap_err();
    assert!(
        matches!(e, EnsembleError::Input(ForestError::OutOfRange { .. })),
        "{e}"
    );
    let e = m.predict_proba(array![[1.0]].view()).unwrap_err();
    assert!(
        matches!(
            e,
            EnsembleError::Input(ForestError::FeatureCount {
                expected: 2,
                got: 1
            })
        ),
        "{e}"
    );
    for bad in ["{}", "[]", r#"{"format": "nope"}"#, r#"{"learner": {}}"#] {
        assert!(TreeEnsemble::import(bad).is_err(), "{bad}");
    }
}
