#!/usr/bin/env python3
"""Export a fitted scikit-learn IsolationForest, RandomForestClassifier or ExtraTreesClassifier
to JSON that Astra can import.

    sklearn_export.py MODEL.joblib OUT.json
        MODEL.joblib is a fitted model of those kinds saved with joblib.dump. (XGBoost models
        need no export: `astra model import` reads XGBoost's own `save_model("m.json")`.)

    sklearn_export.py --selftest-classifier OUT.json [--library random_forest|extra_trees|xgboost]
                      [--classes N] [--n-estimators N] [--seed S]
        Fits the classifier on seeded rows and writes {"model", "X", "proba", ...}: the data
        astra-user/tests/integration/classifier_parity.rs compares Astra against.

    sklearn_export.py --selftest-data OUT.json [--contamination auto|F] [--max-samples auto|N]
                      [--max-features F] [--n-estimators N] [--seed S]
        Fits an IsolationForest on seeded synthetic data and writes {"model", "X",
        "score_samples", "decision_function", ...}: the data astra-user/tests/forest_parity.rs
        compares Astra's scores against.

    From Python: `from sklearn_export import export; export(model) -> dict`.

`astra model import-sklearn OUT.json` reads the output with
`astra::forest::IsolationForest::from_sklearn_json`, which validates every tree (children after
their parent, feature indices in range, finite thresholds) and saves the model in Astra's own
model format; Astra's score_samples / decision_function then equal sklearn's to ~1e-15.

Output layout ("format": "sklearn-isolation-forest", "format_version": 1):
  n_features_in, feature_names_in (list or null), max_samples (sklearn's _max_samples, the
  c(n) normaliser), contamination ("auto" or a fraction), offset (offset_), sklearn_version and
  "estimators": one object per tree with its tree_ arrays children_left, children_right
  (-1 at leaves), feature (-2 at leaves), threshold, n_node_samples, and "features": the
  original column of each feature index the tree uses (the tree's own feature 0, 1, ...).
Floats (threshold, offset, contamination, and X in the self-test data) are written as repr()
strings: Rust's default JSON float parsing can be one ulp off, and a threshold one ulp off can
send a row down the other branch; repr() and Rust's str::parse::<f64> round-trip exactly.
"""

import argparse
import json
import sys


def export(model):
    """The JSON-ready dict for a fitted IsolationForest, RandomForestClassifier or
    ExtraTreesClassifier."""
    import sklearn
    from sklearn.ensemble import ExtraTreesClassifier, IsolationForest, RandomForestClassifier
    from sklearn.utils.validation import check_is_fitted

    if isinstance(model, (RandomForestClassifier, ExtraTreesClassifier)):
        return export_classifier(model)
    if not isinstance(model, IsolationForest):
        raise TypeError(
            "expected a fitted sklearn IsolationForest, RandomForestClassifier or "
            f"ExtraTreesClassifier, got {type(model).__name__}"
        )
    check_is_fitted(model)
    n_features = int(model.n_features_in_)
    # sklearn indexes X with estimators_features_ only when each tree trains on a feature
    # subset (_max_features < n_features_in_, see BaseBagging); otherwise the trees use the
    # original column numbers, whatever estimators_features_ holds.
    subset = getattr(model, "_max_features", n_features) != n_features or model.bootstrap_features
    estimators = []
    for tree, columns in zip(model.estimators_, model.estimators_features_):
        t = tree.tree_
        estimators.append(
            {
                "children_left": t.children_left.tolist(),
                "children_right": t.children_right.tolist(),
                "feature": t.feature.tolist(),
                "threshold": [repr(float(v)) for v in t.threshold],
                "n_node_samples": t.n_node_samples.tolist(),
                "features": [int(c) for c in columns] if subset else list(range(n_features)),
            }
        )
    names = getattr(model, "feature_names_in_", None)
    contamination = model.contamination
    return {
        "format": "sklearn-isolation-forest",
        "format_version": 1,
        "sklearn_version": sklearn.__version__,
        "n_features_in": n_features,
        "feature_names_in": None if names is None else [str(n) for n in names],
        "max_samples": int(getattr(model, "_max_samples", model.max_samples_)),
        "contamination": "auto" if contamination == "auto" else repr(float(contamination)),
        "offset": repr(float(model.offset_)),
        "estimators": estimators,
    }


def export_classifier(model):
    """The JSON-ready dict ("format": "sklearn-tree-ensemble") for a fitted
    RandomForestClassifier or ExtraTreesClassifier with one output: each tree's arrays and its
    class weights per node (tree_.value[node][0]); thresholds as floats, which json writes with
    repr() and Astra reads back exactly."""
    import sklearn
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)
    if getattr(model, "n_outputs_", 1) != 1:
        raise ValueError("only single-output classifiers can be exported")
    names = getattr(model, "feature_names_in_", None)
    estimators = []
    for tree in model.estimators_:
        t = tree.tree_
        estimators.append(
            {
                "children_left": t.children_left.tolist(),
                "children_right": t.children_right.tolist(),
                "feature": t.feature.tolist(),
                "threshold": [float(v) for v in t.threshold],
                "value": [[float(w) for w in node[0]] for node in t.value],
            }
        )
    return {
        "format": "sklearn-tree-ensemble",
        "format_version": 1,
        "kind": "extra_trees" if isinstance(model, ExtraTreesClassifier) else "random_forest",
        "sklearn_version": sklearn.__version__,
        "n_features_in": int(model.n_features_in_),
        "feature_names_in": None if names is None else [str(n) for n in names],
        "classes": [c.item() if hasattr(c, "item") else c for c in model.classes_],
        "estimators": estimators,
    }


def classifier_rows(rng, n, n_classes):
    """Rows shaped like Astra's features, one Gaussian cluster per class with overlap, an
    integer-valued and a constant column; returns (X, y)."""
    import numpy as np

    y = rng.integers(0, n_classes, n)
    centers = rng.normal(scale=3.0, size=(n_classes, 3))
    g = centers[y] + rng.normal(scale=[1.5, 1.0, 2.0], size=(n, 3))
    counts = rng.poisson(2.0 + y, n)
    return np.column_stack([g[:, 0], g[:, 1], counts, np.full(n, 7.0), g[:, 2], rng.exponential(1.0 + y, n)]), y


def fit_classifier(library, X, y, n_estimators, seed):
    """A fitted model of `library` (random_forest, extra_trees or xgboost), single-threaded,
    and its export: the sklearn-tree-ensemble dict, or XGBoost's own JSON model."""
    if library == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(
            n_estimators=n_estimators, max_depth=6, random_state=seed, n_jobs=1, tree_method="hist"
        ).fit(X, y)
        return model, json.loads(model.get_booster().save_raw("json"))
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    cls = ExtraTreesClassifier if library == "extra_trees" else RandomForestClassifier
    model = cls(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(X, y)
    return model, export_classifier(model)


def split_values(library, exported):
    """(feature, value) of every split of every tree: where float32 rounding decides."""
    out = []
    if library == "xgboost":
        for t in exported["learner"]["gradient_booster"]["model"]["trees"]:
            for i, left in enumerate(t["left_children"]):
                if left != -1:
                    out.append((t["split_indices"][i], float(t["split_conditions"][i])))
    else:
        for t in exported["estimators"]:
            for i, left in enumerate(t["children_left"]):
                if left != -1:
                    out.append((t["feature"][i], t["threshold"][i]))
    return out


def selftest_classifier(library, n_classes=3, n_estimators=50, seed=0):
    """Fits `library` on seeded rows and returns the model with test rows and the library's
    own predict_proba for them: training rows, fresh rows, and probes with one feature set
    exactly to a split value (sklearn's threshold, XGBoost's split condition)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X, y = classifier_rows(rng, 2000, n_classes)
    model, exported = fit_classifier(library, X, y, n_estimators, seed)
    fresh, _ = classifier_rows(rng, 500, n_classes)
    splits = split_values(library, exported)
    probes = []
    for _ in range(500):
        f, v = splits[rng.integers(len(splits))]
        row = X[rng.integers(len(X))].copy()
        row[f] = v
        probes.append(row)
    rows = np.vstack([X, fresh, np.array(probes)])
    return {
        "library": library,
        "n_classes": n_classes,
        "model": exported,
        "X": [[repr(float(v)) for v in row] for row in rows],
        "proba": [[float(p) for p in row] for row in model.predict_proba(rows)],
        "n_probes": len(probes),
    }


def selftest_data(contamination="auto", max_samples="auto", max_features=1.0, n_estimators=100, seed=0):
    """Fits on seeded data (3 Gaussian clusters, integer-valued and constant columns, 2% uniform
    outliers) and returns the model with test rows and sklearn's scores for them. The rows are
    the training rows, fresh inliers and outliers, and "probes": rows with one feature set
    exactly to a split threshold, where float32 rounding decides the branch."""
    import numpy as np
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(seed)

    def rows(n, outlier):
        if outlier:
            g = rng.uniform([-15, -15, -20], [15, 15, 20], size=(n, 3))
            counts = rng.integers(0, 30, n)
        else:
            centers = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, -3.0], [-4.0, 6.0, 2.0]])
            g = centers[rng.integers(0, 3, n)] + rng.normal(scale=[1.0, 0.5, 2.0], size=(n, 3))
            counts = rng.integers(0, 6, n)
        # columns: gaussian, gaussian, small integers, constant, gaussian, poisson counts
        return np.column_stack([g[:, 0], g[:, 1], counts, np.full(n, 7.0), g[:, 2], rng.poisson(2.0, n)])

    train = np.vstack([rows(1960, False), rows(40, True)])
    train_outlier = np.array([False] * 1960 + [True] * 40)
    order = rng.permutation(len(train))
    train, train_outlier = train[order], train_outlier[order]
    fresh = np.vstack([rows(300, False), rows(30, True)])
    fresh_outlier = np.array([False] * 300 + [True] * 30)

    model = IsolationForest(
        n_estimators=n_estimators,
        max_samples=max_samples,
        contamination=contamination,
        max_features=max_features,
        random_state=seed,
    ).fit(train)
    exported = export(model)

    probes = []
    for _ in range(300):
        est = exported["estimators"][rng.integers(len(exported["estimators"]))]
        internal = [i for i, left in enumerate(est["children_left"]) if left != -1]
        if not internal:
            continue
        node = internal[rng.integers(len(internal))]
        row = train[rng.integers(len(train))].copy()
        row[est["features"][est["feature"][node]]] = float(est["threshold"][node])
        probes.append(row)
    probes = np.array(probes).reshape(-1, train.shape[1])

    X = np.vstack([train, fresh, probes])
    return {
        "params": {
            "contamination": contamination,
            "max_samples": max_samples,
            "max_features": max_features,
            "n_estimators": n_estimators,
            "seed": seed,
        },
        "model": exported,
        "n_train": len(train),
        "X": [[repr(float(v)) for v in row] for row in X],
        "is_outlier": train_outlier.tolist() + fresh_outlier.tolist() + [False] * len(probes),
        "is_probe": [False] * (len(train) + len(fresh)) + [True] * len(probes),
        "score_samples": model.score_samples(X).tolist(),
        "decision_function": model.decision_function(X).tolist(),
        "predict": model.predict(X).tolist(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="fitted IsolationForest saved with joblib.dump")
    p.add_argument("out", nargs="?", help="output JSON file")
    p.add_argument("--selftest-data", metavar="OUT.json", help="write self-test data instead")
    p.add_argument(
        "--selftest-classifier",
        metavar="OUT.json",
        help="write classifier self-test data instead (see --library, --classes)",
    )
    p.add_argument("--library", default="random_forest", choices=["random_forest", "extra_trees", "xgboost"])
    p.add_argument("--classes", type=int, default=3, help="classifier self-test: class count")
    p.add_argument("--contamination", default="auto", help="self-test: 'auto' or a fraction")
    p.add_argument("--max-samples", default="auto", help="self-test: 'auto' or a row count")
    p.add_argument("--max-features", type=float, default=1.0, help="self-test: feature fraction per tree")
    p.add_argument("--n-estimators", type=int, default=100, help="self-test: number of trees")
    p.add_argument("--seed", type=int, default=0, help="self-test: data and random_state seed")
    args = p.parse_args(argv)

    if args.selftest_classifier:
        data = selftest_classifier(args.library, args.classes, args.n_estimators, args.seed)
        out = args.selftest_classifier
    elif args.selftest_data:
        if args.model or args.out:
            p.error("--selftest-data takes no MODEL/OUT arguments")
        data = selftest_data(
            contamination=args.contamination if args.contamination == "auto" else float(args.contamination),
            max_samples=args.max_samples if args.max_samples == "auto" else int(args.max_samples),
            max_features=args.max_features,
            n_estimators=args.n_estimators,
            seed=args.seed,
        )
        out = args.selftest_data
    else:
        if not (args.model and args.out):
            p.error("expected MODEL.joblib OUT.json (or --selftest-data OUT.json)")
        import joblib

        try:
            data = export(joblib.load(args.model))
        except (TypeError, ValueError) as e:  # not a model it exports, or not fitted
            p.error(f"{args.model}: {e}")
        out = args.out
    with open(out, "w") as f:
        json.dump(data, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
