//! Tree-ensemble classifiers scored natively: scikit-learn's random forests and extra trees
//! (`predict_proba`) and XGBoost's gradient-boosted trees (`predict_proba` of a `gbtree`
//! model with `binary:logistic`, `multi:softprob` or `multi:softmax`), binary and multiclass,
//! on the isolation forest's flat-node design (see [`crate::detect::forest`]).
//!
//! # What matches, and how
//!
//! * **Splits in float32.** Both libraries compare `float32(x)`: scikit-learn sends a row left
//!   when `float32(x) <= threshold` (a float64), XGBoost when `float32(x) < split_condition`
//!   (a float32). Each threshold is turned at import into the float32 `t` for which
//!   `float32(x) <= t` gives the same answer for every float32 `x` (sklearn's rounded down,
//!   XGBoost's the next float32 below), so one walk serves both.
//! * **Random forests and extra trees**: each tree's leaf holds its class weights, normalised
//!   as `DecisionTreeClassifier.predict_proba` does (divided by their sum unless it is 0); the
//!   forest's probability is the sum of its trees' in float64, divided by the tree count.
//! * **Gradient boosting**: each class (one for binary) starts at the model's base margin
//!   (`base_score`, through the logit for `binary:logistic`, as is for softmax) and adds its
//!   trees' leaf values in float32, tree by tree, as XGBoost does; the sigmoid or the softmax
//!   is then taken in float32 too, and binary's first column is `1 - p` in float32.
//! * Rows must be finite: NaN (XGBoost's "missing") and infinities are refused, as by the
//!   forest; Astra's features are never missing.
//!
//! # Files
//!
//! `tools/sklearn_export.py` writes a fitted `RandomForestClassifier` or `ExtraTreesClassifier`
//! as `"format": "sklearn-tree-ensemble"`; XGBoost's own JSON model (`save_model("m.json")`) is
//! read as it is. [`TreeEnsemble::import`] tells them apart. Astra saves what it imported in its
//! own format (`"astra-tree-ensemble"`, [`TreeEnsemble::to_json`]): every tree as arrays with
//! the float32 thresholds already converted, leaf values, and how leaf sums become
//! probabilities. Every file is validated when read: the trees' links (as for the forest), the
//! sizes of the leaf values, a bound on depth and nodes, so a hostile file cannot make a
//! prediction walk forever or allocate without bound.
mod import;
#[cfg(test)]
mod tests;

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::detect::forest::{ForestError, TreeError, Visit, check_links, preorder};

/// Where `astra model import` saves a classifier, in the state directory.
pub const CLASSIFIER_FILE: &str = "classifier.json";
/// The `format` field of Astra's ensemble files.
pub const FORMAT: &str = "astra-tree-ensemble";
pub const FORMAT_VERSION: u32 = 1;
/// Rows per block in batch scoring: a large tree, once in cache, serves many rows (128 to 8192
/// measured within 10% of each other).
const BLOCK_ROWS: usize = 1024;
/// Trees at most this deep are walked to their depth (see [`TreeEnsemble::walk`]).
const SHALLOW: u32 = 10;
/// No tree is deeper than this: XGBoost's default is 6, a random forest on a million rows
/// reaches about 50.
pub const MAX_DEPTH: usize = 256;
/// Nodes in all trees together.
pub const MAX_NODES: usize = 1 << 26;
/// Classes a model may name.
pub const MAX_CLASSES: usize = 1024;
const LEAF: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    /// A row the trees cannot compare: non-finite, beyond float32, or of the wrong width (the
    /// forest's own errors for the same faults).
    #[error(transparent)]
    Input(ForestError),
    #[error("cannot parse model file: {0}")]
    Parse(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("invalid model: {0}")]
    Invalid(String),
    #[error("invalid model: tree {tree}: {source}")]
    Tree {
        tree: usize,
        #[source]
        source: TreeError,
    },
}

/// Where the trees came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    RandomForest,
    ExtraTrees,
    GradientBoosting,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RandomForest => "random_forest",
            Kind::ExtraTrees => "extra_trees",
            Kind::GradientBoosting => "gradient_boosting",
        }
    }
}

/// How the leaves' sums become probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Leaves hold class probabilities; their mean over the trees (random forests).
    Average,
    /// One margin per row through the sigmoid: `[1 - p, p]` (binary boosting).
    Logistic,
    /// One margin per class through the softmax (multiclass boosting).
    Softmax,
}

/// One tree in the file: sklearn-style arrays in original feature indices (a leaf has
/// children -1). A row goes left where `float32(x[feature]) <= threshold`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeArrays {
    pub children_left: Vec<i64>,
    pub children_right: Vec<i64>,
    pub feature: Vec<i64>,
    pub threshold: Vec<f32>,
    /// For each node, [`TreeEnsemble::leaf_width`] values (read at leaves only): class
    /// probabilities for [`Link::Average`], one leaf value otherwise.
    pub value: Vec<f64>,
    /// The class whose margin the tree adds to ([`Link::Softmax`]); 0 otherwise.
    #[serde(default)]
    pub group: u32,
}

/// Astra's file of an ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleFile {
    pub format: String,
    pub format_version: u32,
    pub kind: Kind,
    pub link: Link,
    /// The library and version that trained it, e.g. "scikit-learn 1.9.1".
    pub origin: String,
    /// The class labels, in the order of the probabilities.
    pub classes: Vec<String>,
    pub feature_names: Vec<String>,
    /// The margin each class starts from (boosting); empty for [`Link::Average`].
    #[serde(default)]
    pub base_margin: Vec<f32>,
    pub trees: Vec<TreeArrays>,
}

/// One node of the flat layout: left child implicit (the next node).
#[derive(Clone, Copy, Debug)]
struct Node {
    /// NaN at a leaf, so a row that reaches it stays (`x <= NaN` is false, and `right` is the
    /// leaf itself).
    threshold: f32,
    feature: u32,
    right: u32,
    /// The leaf's slot in `leaf_value` (of `width` values); [`LEAF`] at a split.
    leaf: u32,
}

/// A validated ensemble, ready to score; `&self` scoring, so threads may share one.
#[derive(Clone, Debug)]
pub struct TreeEnsemble {
    file: EnsembleFile,
    nodes: Vec<Node>,
    leaf_value: Vec<f64>,
    /// Per tree: root in `nodes`, depth of its deepest leaf, group.
    roots: Vec<(u32, u32, u32)>,
    /// Values per leaf.
    width: usize,
    /// Margins (or probability columns) per row.
    groups: usize,
}

impl TreeEnsemble {
    /// Validates `file` and builds the scoring layout.
    pub fn from_file(file: EnsembleFile) -> Result<Self, EnsembleError> {
        let invalid = |s: String| Err(EnsembleError::Invalid(s));
        if file.format != FORMAT {
            return invalid(format!("format is {:?}, not {FORMAT:?}", file.format));
        }
        if file.format_version != FORMAT_VERSION {
            return Err(EnsembleError::Unsupported(format!(
                "format_version {} (this build reads {FORMAT_VERSION})",
                file.format_version
            )));
        }
        let n_classes = file.classes.len();
        if !(2..=MAX_CLASSES).contains(&n_classes) {
            return invalid(format!(
                "{n_classes} classes: a classifier has 2 to {MAX_CLASSES}"
            ));
        }
        if file.feature_names.is_empty() {
            return invalid("no features".into());
        }
        if file.trees.is_empty() {
            return invalid("no trees".into());
        }
        let (width, groups) = match file.link {
            Link::Average => (n_classes, n_classes),
            Link::Logistic if n_classes == 2 => (1, 1),
            Link::Softmax if n_classes > 2 => (1, n_classes),
            link => {
                return invalid(format!("link {link:?} does not fit {n_classes} classes"));
            }
        };
        match file.link {
            Link::Average if !file.base_margin.is_empty() => {
                return invalid("a forest has no base margin".into());
            }
            Link::Logistic | Link::Softmax
                if file.base_margin.len() != groups
                    || file.base_margin.iter().any(|m| !m.is_finite()) =>
            {
                return invalid(format!(
                    "base_margin needs {groups} finite values, has {:?}",
                    file.base_margin
                ));
            }
            _ => {}
        }
        let n_features = file.feature_names.len();
        let total: usize = file.trees.iter().map(|t| t.children_left.len()).sum();
        if total > MAX_NODES {
            return invalid(format!("{total} nodes, more than {MAX_NODES}"));
        }
        let mut nodes = Vec::with_capacity(total);
        let mut leaf_value = Vec::new();
        let mut roots = Vec::with_capacity(file.trees.len());
        for (t, tree) in file.trees.iter().enumerate() {
            let n = tree.children_left.len();
            if n == 0 {
                return Err(EnsembleError::Tree {
                    tree: t,
                    source: TreeError::NoNodes,
                });
            }
            for (name, len) in [
                ("children_right", tree.children_right.len()),
                ("feature", tree.feature.len()),
                ("threshold", tree.threshold.len()),
            ] {
                if len != n {
                    return Err(EnsembleError::Tree {
                        tree: t,
                        source: TreeError::Lengths { name, len, n },
                    });
                }
            }
            if tree.value.len() != n * width {
                return invalid(format!(
                    "tree {t}: {} values for {n} nodes of {width} each",
                    tree.value.len()
                ));
            }
            if tree.group as usize >= groups.max(1) || (groups == 1 && tree.group != 0) {
                return invalid(format!("tree {t}: group {} of {groups}", tree.group));
            }
            check_links(
                &tree.children_left,
                &tree.children_right,
                &tree.feature,
                |i| f64::from(tree.threshold[i]),
                n_features,
            )
            .map_err(|source| EnsembleError::Tree { tree: t, source })?;
            if let Some(v) = tree.value.iter().find(|v| !v.is_finite()) {
                return invalid(format!("tree {t}: leaf value {v}"));
            }
            let root = nodes.len() as u32;
            let depth = flatten(tree, width, &mut nodes, &mut leaf_value);
            if depth as usize > MAX_DEPTH {
                return invalid(format!("tree {t} is {depth} deep, more than {MAX_DEPTH}"));
            }
            roots.push((root, depth, tree.group));
        }
        Ok(Self {
            file,
            nodes,
            leaf_value,
            roots,
            width,
            groups,
        })
    }

    /// Reads Astra's own format.
    pub fn from_json(text: &str) -> Result<Self, EnsembleError> {
        let file: EnsembleFile =
            serde_json::from_str(text).map_err(|e| EnsembleError::Parse(e.to_string()))?;
        Self::from_file(file)
    }

    /// Reads any format this build knows: Astra's, `tools/sklearn_export.py`'s, XGBoost's JSON.
    pub fn import(text: &str) -> Result<Self, EnsembleError> {
        import::any(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.file).expect("an ensemble serialises")
    }

    pub fn file(&self) -> &EnsembleFile {
        &self.file
    }

    pub fn classes(&self) -> &[String] {
        &self.file.classes
    }

    pub fn feature_names(&self) -> &[String] {
        &self.file.feature_names
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Values per leaf: the class count for a forest, 1 for boosting.
    pub fn leaf_width(&self) -> usize {
        self.width
    }

    /// Class probabilities of every row of `x` (rows x classes), as the library that trained
    /// the model computes them.
    pub fn predict_proba(&self, x: ArrayView2<'_, f64>) -> Result<Array2<f64>, EnsembleError> {
        let nf = self.file.feature_names.len();
        if x.ncols() != nf {
            return Err(EnsembleError::Input(ForestError::FeatureCount {
                expected: nf,
                got: x.ncols(),
            }));
        }
        let nc = self.file.classes.len();
        let mut out = Array2::zeros((x.nrows(), nc));
        let mut block = vec![0f32; BLOCK_ROWS * nf];
        let mut at = vec![0usize; BLOCK_ROWS];
        let mut margins = vec![0f32; BLOCK_ROWS * self.groups];
        for (b, (chunk, mut probs)) in x
            .axis_chunks_iter(Axis(0), BLOCK_ROWS)
            .zip(out.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS))
            .enumerate()
        {
            to_f32(chunk, &mut block, b * BLOCK_ROWS)?;
            let rows = chunk.nrows();
            let at = &mut at[..rows];
            match self.file.link {
                Link::Average => {
                    let probs = probs.as_slice_mut().expect("rows of a new array");
                    for &(root, depth, _) in &self.roots {
                        self.walk(root, depth, at, &block);
                        for (p, &i) in probs.chunks_exact_mut(nc).zip(at.iter()) {
                            let leaf = self.nodes[i].leaf as usize * nc;
                            for (p, v) in p.iter_mut().zip(&self.leaf_value[leaf..leaf + nc]) {
                                *p += v;
                            }
                        }
                    }
                    let n = self.roots.len() as f64;
                    probs.iter_mut().for_each(|p| *p /= n);
                }
                Link::Logistic | Link::Softmax => {
                    let g = self.groups;
                    let margins = &mut margins[..rows * g];
                    for m in margins.chunks_exact_mut(g) {
                        m.copy_from_slice(&self.file.base_margin);
                    }
                    for &(root, depth, group) in &self.roots {
                        self.walk(root, depth, at, &block);
                        for (m, &i) in margins.chunks_exact_mut(g).zip(at.iter()) {
                            m[group as usize] +=
                                self.leaf_value[self.nodes[i].leaf as usize] as f32;
                        }
                    }
                    for (mut p, m) in probs.outer_iter_mut().zip(margins.chunks_exact(g)) {
                        if self.file.link == Link::Logistic {
                            let one = sigmoid(m[0]);
                            p[0] = f64::from(1.0 - one);
                            p[1] = f64::from(one);
                        } else {
                            softmax(m, p.as_slice_mut().expect("a row of a new array"));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every row of the block from the root to its leaf. Shallow trees (boosting's) are
    /// walked one step for each row at a time, to their depth, so that the rows' independent
    /// loads overlap (a leaf keeps a row where it is). A forest's trees are deep on one side and
    /// shallow on most, so each row walks to its own leaf instead: stepping every row to the
    /// tree's depth, or keeping a list of the rows still walking, measured no faster there.
    fn walk(&self, root: u32, depth: u32, at: &mut [usize], block: &[f32]) {
        let nf = self.file.feature_names.len();
        let step = |i: usize, row: &[f32]| {
            let node = self.nodes[i];
            if row[node.feature as usize] <= node.threshold {
                i + 1
            } else {
                node.right as usize
            }
        };
        at.fill(root as usize);
        if depth <= SHALLOW {
            for _ in 0..depth {
                for (i, row) in at.iter_mut().zip(block.chunks_exact(nf)) {
                    *i = step(*i, row);
                }
            }
            return;
        }
        for (i, row) in at.iter_mut().zip(block.chunks_exact(nf)) {
            while self.nodes[*i].leaf == LEAF {
                *i = step(*i, row);
            }
        }
    }
}

/// The rows of `chunk` as float32 into `block`, refusing what the trees cannot compare.
fn to_f32(
    chunk: ArrayView2<'_, f64>,
    block: &mut [f32],
    first: usize,
) -> Result<(), EnsembleError> {
    let nf = chunk.ncols();
    for (r, row) in chunk.outer_iter().enumerate() {
        for (column, (&value, dst)) in row.iter().zip(&mut block[r * nf..]).enumerate() {
            let row = first + r;
            if !value.is_finite() {
                return Err(EnsembleError::Input(ForestError::NonFinite {
                    row,
                    column,
                    value,
                }));
            }
            let v = value as f32;
            if !v.is_finite() {
                return Err(EnsembleError::Input(ForestError::OutOfRange {
                    row,
                    column,
                    value,
                }));
            }
            *dst = v;
        }
    }
    Ok(())
}

/// XGBoost's `common::Sigmoid`, in float32.
fn sigmoid(x: f32) -> f32 {
    1.0 / ((-x).exp() + 1.0 + 1e-16)
}

/// XGBoost's `common::Softmax`: float32 exponentials of the margins less their maximum, summed
/// in float64, each divided by the sum rounded to float32.
fn softmax(m: &[f32], out: &mut [f64]) {
    let max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = m.iter().map(|&v| f64::from((v - max).exp())).sum();
    for (o, &v) in out.iter_mut().zip(m) {
        *o = f64::from((v - max).exp() / sum as f32);
    }
}

/// Appends `tree` (validated) to `nodes` in pre-order and its leaves' values to `leaf_value`;
/// returns the depth of its deepest leaf.
fn flatten(
    tree: &TreeArrays,
    width: usize,
    nodes: &mut Vec<Node>,
    leaf_value: &mut Vec<f64>,
) -> u32 {
    preorder(
        &tree.children_left,
        &tree.children_right,
        nodes.len(),
        |v| match v {
            Visit::Right { parent, at } => nodes[parent].right = at as u32,
            Visit::Node { node: i, at, leaf } => nodes.push(if leaf {
                let slot = leaf_value.len() / width;
                leaf_value.extend_from_slice(&tree.value[i * width..(i + 1) * width]);
                Node {
                    threshold: f32::NAN,
                    feature: 0,
                    right: at as u32,
                    leaf: slot as u32,
                }
            } else {
                Node {
                    threshold: tree.threshold[i],
                    feature: tree.feature[i] as u32,
                    right: 0,
                    leaf: LEAF,
                }
            }),
        },
    )
}

/// A one-split forest for the tests of the modules that use classifiers: `features[0] <= at`
/// gives the first class probability `left`, else `right`.
#[cfg(test)]
pub(crate) fn stump_classifier(
    features: &[&str],
    classes: [&str; 2],
    at: f32,
    left: [f64; 2],
    right: [f64; 2],
) -> TreeEnsemble {
    TreeEnsemble::from_file(EnsembleFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        kind: Kind::RandomForest,
        link: Link::Average,
        origin: "test".into(),
        classes: classes.map(String::from).to_vec(),
        feature_names: features.iter().map(|f| f.to_string()).collect(),
        base_margin: vec![],
        trees: vec![TreeArrays {
            children_left: vec![1, -1, -1],
            children_right: vec![2, -1, -1],
            feature: vec![0, 0, 0],
            threshold: vec![at, 0.0, 0.0],
            value: [[0.0, 0.0], left, right].concat(),
            group: 0,
        }],
    })
    .expect("a valid stump")
}
