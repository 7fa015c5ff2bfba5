use rand::Rng as _;

use super::*;

#[test]
fn float32_thresholds_decide_like_float64_ones() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..100_000 {
        // Thresholds as sklearn makes them: midpoints of float32 values, held in float64.
        let a =
            f32::from_bits(next() as u32 & 0x7f7f_ffff) * if next() % 2 == 0 { 1.0 } else { -1.0 };
        let b = a.next_up();
        let t = (f64::from(a) + f64::from(b)) / 2.0;
        let t32 = threshold_f32(t);
        for x in [a.next_down(), a, b, b.next_up()] {
            assert_eq!(f64::from(x) <= t, x <= t32, "x {x} t {t}");
        }
    }
    assert_eq!(threshold_f32(1e300), f32::MAX);
    assert_eq!(threshold_f32(-1e300), f32::NEG_INFINITY);
}
use ndarray::{Array2, array};

/// Standard normal draws (Box-Muller), to avoid a rand_distr dependency.
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn blob(n: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, 2), |_| gaussian(&mut rng))
}

fn params(seed: u64) -> ForestParams {
    ForestParams {
        seed,
        ..ForestParams::default()
    }
}

#[test]
fn average_path_length_matches_sklearn() {
    // Values from sklearn.ensemble._iforest._average_path_length.
    assert_eq!(average_path_length(0), 0.0);
    assert_eq!(average_path_length(1), 0.0);
    assert_eq!(average_path_length(2), 1.0);
    let close = |n, want: f64| {
        let got = average_path_length(n);
        assert!((got - want).abs() < 1e-14, "c({n}) = {got}, want {want}");
    };
    close(3, 1.207392357589623);
    close(5, 2.327020052042847);
    close(256, 10.244770920119917);
    close(1000, 12.969940887100174);
}

#[test]
fn same_seed_same_forest_other_seed_other_forest() {
    let x = blob(500, 1);
    let a = IsolationForest::fit(x.view(), &params(7), vec![]).unwrap();
    let b = IsolationForest::fit(x.view(), &params(7), vec![]).unwrap();
    let c = IsolationForest::fit(x.view(), &params(8), vec![]).unwrap();
    assert_eq!(a.to_json(), b.to_json());
    assert_ne!(a.to_json(), c.to_json());
}

#[test]
fn json_round_trip_is_exact() {
    let x = blob(400, 2);
    let p = ForestParams {
        contamination: Contamination::Fraction(0.1),
        ..params(3)
    };
    let names = vec!["a".to_string(), "b".to_string()];
    let model = IsolationForest::fit(x.view(), &p, names).unwrap();
    let text = model.to_json();
    let back = IsolationForest::from_json(&text).unwrap();
    assert_eq!(back.to_json(), text);
    assert_eq!(back.trees, model.trees);
    assert_eq!(back.offset(), model.offset());
    assert_eq!(back.feature_names(), ["a", "b"]);
    assert_eq!(back.contamination(), Contamination::Fraction(0.1));
    assert_eq!(
        back.score_samples(x.view()).unwrap(),
        model.score_samples(x.view()).unwrap()
    );
    // serde works too and validates.
    let via_serde: IsolationForest = serde_json::from_str(&text).unwrap();
    assert_eq!(via_serde.to_json(), text);
}

#[test]
fn outlier_scores_lower_than_inliers() {
    let mut x = blob(1000, 3);
    x.row_mut(0).assign(&array![8.0, -8.0]);
    let model = IsolationForest::fit(x.view(), &params(0), vec![]).unwrap();
    let scores = model.score_samples(x.view()).unwrap();
    let outlier = scores[0];
    let inlier_mean = scores.iter().skip(1).sum::<f64>() / 999.0;
    assert!(
        outlier < inlier_mean - 0.2,
        "outlier {outlier} vs inliers {inlier_mean}"
    );
    assert!(scores.iter().skip(1).all(|&s| s > outlier));
    assert!(model.anomaly_score(&[8.0, -8.0]).unwrap() > 0.65);
    assert!(model.anomaly_score(&[0.0, 0.0]).unwrap() < 0.5);
    assert_eq!(
        model
            .predict(array![[8.0, -8.0], [0.0, 0.0]].view())
            .unwrap(),
        array![-1, 1]
    );
    // Batch and single-row scoring agree, including across block boundaries.
    for i in [0, 63, 64, 65, 999] {
        assert_eq!(
            model.score_row(x.row(i).as_slice().unwrap()).unwrap(),
            scores[i]
        );
    }
    // So do column-major views.
    let t = x.t().to_owned();
    assert_eq!(model.score_samples(t.t()).unwrap(), scores);
}

#[test]
fn contamination_sets_offset_at_the_percentile() {
    let x = blob(2000, 4);
    for c in [0.05, 0.1, 0.25] {
        let p = ForestParams {
            contamination: Contamination::Fraction(c),
            ..params(1)
        };
        let model = IsolationForest::fit(x.view(), &p, vec![]).unwrap();
        let d = model.decision_function(x.view()).unwrap();
        let frac = d.iter().filter(|&&v| v < 0.0).count() as f64 / 2000.0;
        assert!((frac - c).abs() < 0.01, "contamination {c}: {frac} flagged");
        assert!(model.offset() < -0.3 && model.offset() > -0.8);
    }
    let bad = |c| ForestParams {
        contamination: Contamination::Fraction(c),
        ..params(1)
    };
    for c in [0.0, -0.1, 0.51, f64::NAN] {
        let err = IsolationForest::fit(x.view(), &bad(c), vec![]).unwrap_err();
        assert!(matches!(err, ForestError::BadContamination(_)), "{err}");
    }
}

#[test]
fn percentile_matches_numpy() {
    // np.percentile([...], q) for these q.
    let v = vec![3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0];
    assert_eq!(percentile_linear(v.clone(), 0.0), 1.0);
    assert_eq!(percentile_linear(v.clone(), 100.0), 9.0);
    assert_eq!(percentile_linear(v.clone(), 50.0), 3.0);
    assert_eq!(percentile_linear(v.clone(), 10.0), 1.3);
    assert_eq!(percentile_linear(v, 90.0), 6.600000000000001);
    assert_eq!(percentile_linear(vec![2.5], 10.0), 2.5);
}

#[test]
fn constant_features_never_split() {
    let mut x = blob(600, 5);
    let mut wide = Array2::zeros((600, 4));
    wide.column_mut(0).fill(3.0);
    wide.column_mut(1).assign(&x.column(0));
    wide.column_mut(2).fill(-1.0);
    wide.column_mut(3).assign(&x.column(1));
    let model = IsolationForest::fit(wide.view(), &params(2), vec![]).unwrap();
    for tree in &model.trees {
        for (i, &f) in tree.feature.iter().enumerate() {
            if tree.children_left[i] != TREE_LEAF {
                assert!(f == 1 || f == 3, "split on constant feature {f}");
            }
        }
    }
    // All-constant data: every tree is a single leaf, every row scores the same.
    x.fill(1.0);
    let model = IsolationForest::fit(x.view(), &params(2), vec![]).unwrap();
    assert!(model.trees.iter().all(|t| t.children_left.len() == 1));
    let s = model.score_samples(x.view()).unwrap();
    assert!(s.iter().all(|&v| v == s[0]));
    // max_samples = 256 in the leaf: path length c(256) = the normaliser, so score -0.5.
    assert!((s[0] + 0.5).abs() < 1e-12);
}

#[test]
fn trees_respect_max_samples_and_depth() {
    let x = blob(300, 6);
    let p = ForestParams {
        max_samples: MaxSamples::Count(100),
        ..params(0)
    };
    let model = IsolationForest::fit(x.view(), &p, vec![]).unwrap();
    assert_eq!(model.max_samples(), 100);
    assert_eq!(model.n_estimators(), 100);
    for tree in &model.trees {
        assert_eq!(tree.n_node_samples[0], 100);
        let mut depth = vec![0usize; tree.children_left.len()];
        for i in 0..depth.len() {
            if tree.children_left[i] != TREE_LEAF {
                let (l, r) = (
                    tree.children_left[i] as usize,
                    tree.children_right[i] as usize,
                );
                assert_eq!(l, i + 1, "sklearn's depth-first order");
                depth[l] = depth[i] + 1;
                depth[r] = depth[i] + 1;
                let n = tree.n_node_samples[l] + tree.n_node_samples[r];
                assert_eq!(n, tree.n_node_samples[i]);
            }
        }
        assert!(depth.iter().all(|&d| d <= 7), "ceil(log2(100)) = 7");
    }
}

#[test]
fn max_samples_larger_than_data_is_clamped() {
    let x = blob(50, 7);
    let p = ForestParams {
        max_samples: MaxSamples::Count(1000),
        ..params(0)
    };
    let model = IsolationForest::fit(x.view(), &p, vec![]).unwrap();
    assert_eq!(model.max_samples(), 50);
    let auto = IsolationForest::fit(x.view(), &params(0), vec![]).unwrap();
    assert_eq!(auto.max_samples(), 50);
    // One row: sklearn's special case, every score is -0.5.
    let one = IsolationForest::fit(x.slice(ndarray::s![..1, ..]), &params(0), vec![]).unwrap();
    assert_eq!(one.max_samples(), 1);
    assert_eq!(one.score_samples(x.view()).unwrap()[3], -0.5);
}

#[test]
fn bad_input_is_rejected() {
    let x = blob(100, 8);
    let model = IsolationForest::fit(x.view(), &params(0), vec![]).unwrap();
    let err = model
        .score_samples(Array2::zeros((3, 3)).view())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ForestError::FeatureCount {
                expected: 2,
                got: 3
            }
        ),
        "{err}"
    );
    let err = model.score_row(&[1.0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "wrong feature count: the model has 2 features, the input has 1"
    );

    let mut nan = x.clone();
    nan[[70, 1]] = f64::NAN;
    let err = model.score_samples(nan.view()).unwrap_err();
    assert!(
        matches!(
            err,
            ForestError::NonFinite {
                row: 70,
                column: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        model.score_row(&[0.0, f64::INFINITY]),
        Err(ForestError::NonFinite { .. })
    ));
    let err = IsolationForest::fit(nan.view(), &params(0), vec![]).unwrap_err();
    assert!(
        matches!(
            err,
            ForestError::NonFinite {
                row: 70,
                column: 1,
                ..
            }
        ),
        "{err}"
    );

    let mut huge = x.clone();
    huge[[5, 0]] = 1e300;
    let err = IsolationForest::fit(huge.view(), &params(0), vec![]).unwrap_err();
    assert!(
        matches!(
            err,
            ForestError::OutOfRange {
                row: 5,
                column: 0,
                ..
            }
        ),
        "{err}"
    );
    // Scoring accepts it, as sklearn does (float32 inf).
    assert!(model.score_row(&[1e300, 0.0]).is_ok());

    let empty = Array2::<f64>::zeros((0, 2));
    let err = IsolationForest::fit(empty.view(), &params(0), vec![]).unwrap_err();
    assert!(matches!(err, ForestError::EmptyTrainingSet));
    let err = IsolationForest::fit(x.view(), &params(0), vec!["only".into()]).unwrap_err();
    assert!(matches!(
        err,
        ForestError::FeatureNames {
            expected: 2,
            got: 1
        }
    ));
    let p = ForestParams {
        n_estimators: 0,
        ..params(0)
    };
    assert!(matches!(
        IsolationForest::fit(x.view(), &p, vec![]),
        Err(ForestError::BadParam(_))
    ));
    let p = ForestParams {
        max_samples: MaxSamples::Count(0),
        ..params(0)
    };
    assert!(matches!(
        IsolationForest::fit(x.view(), &p, vec![]),
        Err(ForestError::BadParam(_))
    ));
}

/// A one-split model in Astra's format, with `tree` spliced in.
fn model_json(tree: &str) -> String {
    format!(
        r#"{{"format":"astra-isolation-forest","format_version":1,"n_features":2,
        "feature_names":["a","b"],"max_samples":4,"contamination":"auto","offset":"-0.5",
        "trees":[{tree}]}}"#
    )
}

#[test]
fn hand_written_model_scores_as_expected() {
    let tree = r#"{"children_left":[1,-1,-1],"children_right":[2,-1,-1],"feature":[1,-2,-2],
        "threshold":["0.5","-2","-2"],"n_node_samples":[4,1,3]}"#;
    let model = IsolationForest::from_json(&model_json(tree)).unwrap();
    // Left leaf: depth 1 + c(1) = 1; right leaf: depth 1 + c(3).
    let c4 = average_path_length(4);
    let left = model.score_row(&[0.0, 0.5]).unwrap();
    assert!((left + 2f64.powf(-1.0 / c4)).abs() < 1e-15);
    let right = model.score_row(&[0.0, 0.51]).unwrap();
    let e = 1.0 + average_path_length(3);
    assert!((right + 2f64.powf(-e / c4)).abs() < 1e-15);
    // float32 rounding decides the side: 0.5000000001 rounds to 0.5 in f32, so goes left.
    assert_eq!(model.score_row(&[0.0, 0.500_000_000_1]).unwrap(), left);
}

#[test]
fn invalid_models_are_rejected_with_a_reason() {
    let cases = [
        (
            r#"{"children_left":[1,-1,-1],"children_right":[5,-1,-1],"feature":[0,-2,-2],"threshold":["0","0","0"],"n_node_samples":[2,1,1]}"#,
            "out of range",
        ),
        (
            r#"{"children_left":[0,-1],"children_right":[1,-1],"feature":[0,-2],"threshold":["0","0"],"n_node_samples":[2,1]}"#,
            "out of range",
        ),
        (
            r#"{"children_left":[1,-1,-1],"children_right":[2,-1,-1],"feature":[7,-2,-2],"threshold":["0","0","0"],"n_node_samples":[2,1,1]}"#,
            "unknown feature index 7",
        ),
        (
            r#"{"children_left":[1,-1,-1],"children_right":[2,-1,-1],"feature":[0,-2,-2],"threshold":["inf","0","0"],"n_node_samples":[2,1,1]}"#,
            "non-finite threshold",
        ),
        (
            r#"{"children_left":[1,-1],"children_right":[-1,-1],"feature":[0,-2],"threshold":["0","0"],"n_node_samples":[2,1]}"#,
            "a leaf has both -1",
        ),
        (
            r#"{"children_left":[1,3,-1,-1],"children_right":[2,3,-1,-1],"feature":[0,0,-2,-2],"threshold":["0","0","0","0"],"n_node_samples":[2,1,1,1]}"#,
            "same left and right",
        ),
        (
            r#"{"children_left":[1,2,-1,-1],"children_right":[2,3,-1,-1],"feature":[0,0,-2,-2],"threshold":["0","0","0","0"],"n_node_samples":[2,1,1,1]}"#,
            "node 2 has 2 parents",
        ),
        (
            r#"{"children_left":[1,-1],"children_right":[2,-1],"feature":[0,-2],"threshold":["0","0"],"n_node_samples":[2,1]}"#,
            "out of range",
        ),
        (
            r#"{"children_left":[-1],"children_right":[-1],"feature":[-2,0],"threshold":["0"],"n_node_samples":[1]}"#,
            "feature has 2 entries",
        ),
        (
            r#"{"children_left":[-1],"children_right":[-1],"feature":[-2],"threshold":[0.5],"n_node_samples":[1]}"#,
            "decimal string",
        ),
    ];
    for (tree, want) in cases {
        let err = IsolationForest::from_json(&model_json(tree))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
        assert!(!err.contains('\n'), "one line: {err:?}");
        assert!(serde_json::from_str::<IsolationForest>(&model_json(tree)).is_err());
    }
    for (text, want) in [
        ("not json", "cannot parse model file"),
        ("{}", "not an Astra model file"),
        (
            r#"{"format":"sklearn-isolation-forest","format_version":1}"#,
            "scikit-learn export",
        ),
        (
            r#"{"format":"astra-isolation-forest","format_version":9}"#,
            "format_version Some(9)",
        ),
    ] {
        let err = IsolationForest::from_json(text).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
    let err = IsolationForest::from_json(&model_json(""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no trees"), "{err}");
}

/// A chain of `n` splits: valid node by node, but deeper than any tree grown on
/// `max_samples` 4 rows (at most 2 levels, 7 nodes).
fn chain(n: usize) -> String {
    let total = 2 * n + 1;
    let (mut left, mut right, mut feature, mut threshold, mut samples) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        // Node 2i splits into a leaf (2i+1) and the next split (2i+2).
        left.push((2 * i + 1) as i64);
        right.push((2 * i + 2) as i64);
        feature.push(0);
        threshold.push("\"0\"".to_owned());
        samples.push(n - i + 1);
        left.push(-1);
        right.push(-1);
        feature.push(-2);
        threshold.push("\"-2\"".to_owned());
        samples.push(1);
    }
    left.push(-1);
    right.push(-1);
    feature.push(-2);
    threshold.push("\"-2\"".to_owned());
    samples.push(1);
    assert_eq!(left.len(), total);
    format!(
        r#"{{"children_left":{left:?},"children_right":{right:?},"feature":{feature:?},"threshold":[{}],"n_node_samples":{samples:?}}}"#,
        threshold.join(",")
    )
}

#[test]
fn trees_deeper_or_larger_than_max_samples_allows_are_refused() {
    // Two levels in 5 nodes is what max_samples 4 allows: accepted.
    assert!(IsolationForest::from_json(&model_json(&chain(2))).is_ok());
    // Three levels in 7 nodes: few enough nodes, too deep.
    let err = IsolationForest::from_json(&model_json(&chain(3)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 levels deep") && err.contains("stop at 2"),
        "{err}"
    );
    // Nine nodes: more than 4 rows can make.
    let err = IsolationForest::from_json(&model_json(&chain(4)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("9 nodes, more than a tree grown on max_samples 4"),
        "{err}"
    );
    // The reported stall, a chain 100k deep, is refused instead of scored.
    let err = IsolationForest::from_json(&model_json(&chain(100_000)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tree 0: 200001 nodes"), "{err}");
}

#[test]
fn sklearn_import_maps_feature_subsets() {
    // One tree grown on columns [2, 0] of a 3-feature model: local feature 0 is column 2.
    let text = r#"{"format":"sklearn-isolation-forest","format_version":1,"n_features_in":3,
        "feature_names_in":null,"max_samples":4,"contamination":"0.1","offset":"-0.55",
        "estimators":[{"children_left":[1,-1,-1],"children_right":[2,-1,-1],
        "feature":[0,-2,-2],"threshold":["1.5","-2.0","-2.0"],"n_node_samples":[4,2,2],
        "features":[2,0]}]}"#;
    let model = IsolationForest::from_sklearn_json(text).unwrap();
    assert!(
        model.feature_names().is_empty(),
        "sklearn fitted on an unnamed array"
    );
    assert_eq!(model.offset(), -0.55);
    assert_eq!(model.contamination(), Contamination::Fraction(0.1));
    assert_eq!(model.trees[0].feature, [2, -2, -2]);
    let bad = text.replace(r#""features":[2,0]"#, r#""features":[5,0]"#);
    let err = IsolationForest::from_sklearn_json(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("column 5"), "{err}");
    let err = IsolationForest::from_sklearn_json(&model_json(""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Astra model file"), "{err}");
}
