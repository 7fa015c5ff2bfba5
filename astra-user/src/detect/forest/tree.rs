//! One isolation tree: grown on a sample, flattened for scoring, and checked when it comes
//! from a file.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::*;

/// Grows one isolation tree on `m` rows stored column-major in `x` (`x[f * m + row]`), in
/// sklearn's depth-first order (a node, then its whole left subtree, then its right subtree).
pub(super) fn grow_tree(
    x: &[f32],
    m: usize,
    nf: usize,
    max_depth: usize,
    rng: &mut ChaCha8Rng,
) -> TreeArrays {
    struct Pending {
        start: usize,
        end: usize,
        depth: usize,
        /// Parent's node id, and whether this is its left child.
        parent: Option<(usize, bool)>,
        /// Features known to be constant in this node (found constant in an ancestor).
        constant: Vec<usize>,
    }
    let mut tree = TreeArrays {
        children_left: Vec::new(),
        children_right: Vec::new(),
        feature: Vec::new(),
        threshold: Vec::new(),
        n_node_samples: Vec::new(),
    };
    let mut samples: Vec<u32> = (0..m as u32).collect();
    let mut stack = vec![Pending {
        start: 0,
        end: m,
        depth: 0,
        parent: None,
        constant: Vec::new(),
    }];
    while let Some(Pending {
        start,
        end,
        depth,
        parent,
        mut constant,
    }) = stack.pop()
    {
        let id = tree.children_left.len();
        match parent {
            Some((p, true)) => tree.children_left[p] = id as i64,
            Some((p, false)) => tree.children_right[p] = id as i64,
            None => {}
        }
        let n = end - start;
        let split = if depth >= max_depth || n < 2 {
            None
        } else {
            draw_split(x, m, nf, &samples[start..end], &mut constant, rng)
        };
        tree.children_left.push(TREE_LEAF);
        tree.children_right.push(TREE_LEAF);
        tree.n_node_samples.push(n as u64);
        let Some((f, threshold)) = split else {
            tree.feature.push(TREE_UNDEFINED);
            tree.threshold.push(TREE_UNDEFINED as f64);
            continue;
        };
        tree.feature.push(f as i64);
        tree.threshold.push(threshold);
        // Partition samples[start..end]: rows with x <= threshold first.
        let column = &x[f * m..(f + 1) * m];
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            if f64::from(column[samples[lo] as usize]) <= threshold {
                lo += 1;
            } else {
                hi -= 1;
                samples.swap(lo, hi);
            }
        }
        let child = |start, end, is_left, constant| Pending {
            start,
            end,
            depth: depth + 1,
            parent: Some((id, is_left)),
            constant,
        };
        // The left child is popped first, so it gets id + 1.
        stack.push(child(lo, end, false, constant.clone()));
        stack.push(child(start, lo, true, constant));
    }
    tree
}

/// Draws a split for the node holding `samples`: a feature uniformly among those not known to
/// be constant (redrawing, and remembering in `constant`, any found constant here), and a
/// threshold uniformly in `[min, max)`. `None` when every feature is constant in the node.
pub(super) fn draw_split(
    x: &[f32],
    m: usize,
    nf: usize,
    samples: &[u32],
    constant: &mut Vec<usize>,
    rng: &mut ChaCha8Rng,
) -> Option<(usize, f64)> {
    let mut candidates: Vec<usize> = (0..nf).filter(|f| !constant.contains(f)).collect();
    while !candidates.is_empty() {
        let f = candidates.swap_remove(rng.random_range(0..candidates.len()));
        let column = &x[f * m..(f + 1) * m];
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for &s in samples {
            let v = column[s as usize];
            min = min.min(v);
            max = max.max(v);
        }
        if max <= min + FEATURE_THRESHOLD {
            constant.push(f);
            continue;
        }
        let (min, max) = (f64::from(min), f64::from(max));
        let u: f64 = rng.random();
        let threshold = (max - min) * u + min;
        // As sklearn: a threshold equal to the maximum would send every row left.
        return Some((f, if threshold >= max { min } else { threshold }));
    }
    None
}

/// Appends `tree` (validated) to `nodes` in pre-order and each leaf's path length to
/// `leaf_value`, computed as sklearn does: `(depth_from_1 + c(n_node_samples)) - 1`.
/// Returns the depth of the deepest leaf.
pub(super) fn flatten(tree: &TreeArrays, nodes: &mut Vec<Node>, leaf_value: &mut Vec<f64>) -> u32 {
    let mut depth_of = vec![0u32; tree.children_left.len()];
    preorder(
        &tree.children_left,
        &tree.children_right,
        nodes.len(),
        |v| match v {
            Visit::Right { parent, at } => nodes[parent].right = at as u32,
            Visit::Node { node: i, at, leaf } => {
                if leaf {
                    let c = average_path_length(tree.n_node_samples[i] as usize);
                    leaf_value.push((f64::from(depth_of[i] + 1) + c) - 1.0);
                    nodes.push(Node {
                        threshold: f32::NAN,
                        feature: 0,
                        right: at as u32,
                    });
                } else {
                    for child in [tree.children_left[i], tree.children_right[i]] {
                        depth_of[child as usize] = depth_of[i] + 1;
                    }
                    leaf_value.push(0.0);
                    nodes.push(Node {
                        threshold: threshold_f32(tree.threshold[i]),
                        feature: tree.feature[i] as u32,
                        right: 0,
                    });
                }
            }
        },
    )
}

/// What [`preorder`] reports, in order.
pub(crate) enum Visit {
    /// The next node in pre-order, to go at index `at` of the flat array.
    Node { node: usize, at: usize, leaf: bool },
    /// The right child of the split at `parent` went to `at`.
    Right { parent: usize, at: usize },
}

/// Lays out a validated tree in pre-order, a split's left child right after it, so that only
/// the right child needs a link: the flat indices start at `start`. Returns the depth of the
/// deepest leaf.
pub(crate) fn preorder(
    left: &[i64],
    right: &[i64],
    start: usize,
    mut visit: impl FnMut(Visit),
) -> u32 {
    let mut max_depth = 0;
    let mut at = start;
    // (node, its depth, flat index of the split whose right child it is)
    let mut stack: Vec<(usize, u32, Option<usize>)> = vec![(0, 0, None)];
    while let Some((i, depth, right_of)) = stack.pop() {
        if let Some(parent) = right_of {
            visit(Visit::Right { parent, at });
        }
        let leaf = left[i] == TREE_LEAF;
        visit(Visit::Node { node: i, at, leaf });
        if leaf {
            max_depth = max_depth.max(depth);
        } else {
            stack.push((right[i] as usize, depth + 1, Some(at)));
            stack.push((left[i] as usize, depth + 1, None));
        }
        at += 1;
    }
    max_depth
}

/// Checks one tree's arrays; the error says which node is wrong and why.
pub(super) fn validate_tree(tree: &TreeArrays, n_features: usize) -> Result<(), TreeError> {
    let n = tree.children_left.len();
    if n == 0 {
        return Err(TreeError::NoNodes);
    }
    for (name, len) in [
        ("children_right", tree.children_right.len()),
        ("feature", tree.feature.len()),
        ("threshold", tree.threshold.len()),
        ("n_node_samples", tree.n_node_samples.len()),
    ] {
        if len != n {
            return Err(TreeError::Lengths { name, len, n });
        }
    }
    if let Some(node) = tree.n_node_samples.iter().position(|&n| n == 0) {
        return Err(TreeError::NoSamples { node });
    }
    check_links(
        &tree.children_left,
        &tree.children_right,
        &tree.feature,
        |i| tree.threshold[i],
        n_features,
    )
}

/// The checks every tree file needs, whatever its leaves hold: each node a leaf (both
/// children -1) or a split with two distinct children after it, every node but the root
/// with exactly one parent (so no cycles and nothing shared), known features and finite
/// thresholds. The arrays are of one length, `left`'s.
pub(crate) fn check_links(
    left: &[i64],
    right: &[i64],
    feature: &[i64],
    threshold: impl Fn(usize) -> f64,
    n_features: usize,
) -> Result<(), TreeError> {
    let n = left.len();
    let mut parents = vec![0u32; n];
    for i in 0..n {
        let (left, right) = (left[i], right[i]);
        if left == TREE_LEAF || right == TREE_LEAF {
            if left != right {
                return Err(TreeError::HalfLeaf {
                    node: i,
                    left,
                    right,
                });
            }
            continue;
        }
        for child in [left, right] {
            if child <= i as i64 || child >= n as i64 {
                return Err(TreeError::ChildOutOfRange { node: i, child, n });
            }
            parents[child as usize] += 1;
        }
        if left == right {
            return Err(TreeError::SameChildren {
                node: i,
                child: left,
            });
        }
        let f = feature[i];
        if f < 0 || f as u64 >= n_features as u64 {
            return Err(TreeError::UnknownFeature {
                node: i,
                feature: f,
                n_features,
            });
        }
        if !threshold(i).is_finite() {
            return Err(TreeError::NonFiniteThreshold {
                node: i,
                threshold: threshold(i),
            });
        }
    }
    if let Some(i) = (1..n).find(|&i| parents[i] != 1) {
        return Err(TreeError::Parents {
            node: i,
            parents: parents[i],
        });
    }
    Ok(())
}

/// How deep a tree grown on `max_samples` rows gets: sklearn's
/// `int(np.ceil(np.log2(max(max_samples, 2))))`, computed exactly. Astra grows its own trees to
/// the same limit.
pub(super) fn depth_limit(max_samples: usize) -> usize {
    (usize::BITS - (max_samples.max(2) - 1).leading_zeros()) as usize
}

/// A tree grown on `max_samples` rows has at most one leaf per row, so at most
/// `2 * max_samples - 1` nodes, and is at most [`depth_limit`] deep. A file that says otherwise
/// was not trained that way, and a deep one would cost every poll its depth per source (a
/// 500k-deep chain stalled each poll for 20 s).
pub(super) fn check_tree_shape(
    nodes: usize,
    depth: usize,
    max_samples: usize,
) -> Result<(), TreeError> {
    let max_nodes = max_samples.saturating_mul(2).saturating_sub(1).max(1);
    if nodes > max_nodes {
        return Err(TreeError::TooManyNodes {
            nodes,
            max_samples,
            max_nodes,
        });
    }
    let limit = depth_limit(max_samples);
    if depth > limit {
        return Err(TreeError::TooDeep {
            depth,
            max_samples,
            limit,
        });
    }
    Ok(())
}

pub(super) fn invalid_tree(t: usize, e: TreeError) -> ForestError {
    ForestError::InvalidModel(format!("tree {t}: {e}"))
}

/// What is wrong with one tree of a model file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TreeError {
    #[error("the tree has no nodes")]
    NoNodes,
    #[error("{name} has {len} entries, children_left has {n}")]
    Lengths {
        name: &'static str,
        len: usize,
        n: usize,
    },
    #[error("node {node} has n_node_samples 0")]
    NoSamples { node: usize },
    #[error(
        "node {node} has children {left} and {right}: a leaf has both -1, an internal node neither"
    )]
    HalfLeaf { node: usize, left: i64, right: i64 },
    #[error(
        "node {node} has child {child}, out of range (children must be in {}..{n}, after their parent)",
        node + 1
    )]
    ChildOutOfRange { node: usize, child: i64, n: usize },
    #[error("node {node} has the same left and right child {child}")]
    SameChildren { node: usize, child: i64 },
    #[error(
        "node {node} splits on unknown feature index {feature} (the model has {n_features} features)"
    )]
    UnknownFeature {
        node: usize,
        feature: i64,
        n_features: usize,
    },
    #[error("node {node} has non-finite threshold {threshold}")]
    NonFiniteThreshold { node: usize, threshold: f64 },
    #[error("node {node} has {parents} parents (every node but the root needs exactly one)")]
    Parents { node: usize, parents: u32 },
    #[error(
        "{nodes} nodes, more than a tree grown on max_samples {max_samples} rows can have ({max_nodes})"
    )]
    TooManyNodes {
        nodes: usize,
        max_samples: usize,
        max_nodes: usize,
    },
    #[error("{depth} levels deep; trees grown on max_samples {max_samples} rows stop at {limit}")]
    TooDeep {
        depth: usize,
        max_samples: usize,
        limit: usize,
    },
    #[error("node {node} splits on feature {feature}, but the tree has {n} features")]
    UnmappedFeature { node: usize, feature: i64, n: usize },
    #[error("features maps {feature} to column {column}, but the model has {n_features} features")]
    ColumnOutOfRange {
        feature: i64,
        column: i64,
        n_features: usize,
    },
}
