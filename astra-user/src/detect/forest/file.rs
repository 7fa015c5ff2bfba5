//! Model files: Astra's own format and scikit-learn's exported trees, both read back exactly
//! (floats as decimal strings that round-trip).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

pub(super) fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ForestError> {
    serde_json::from_str(text).map_err(|e| ForestError::Parse(e.to_string()))
}

/// The fields read first, to say clearly what kind of file this is.
#[derive(Deserialize)]
pub(super) struct FormatProbe {
    pub(super) format: Option<String>,
    pub(super) format_version: Option<u64>,
}

/// Astra's model file.
#[derive(Serialize, Deserialize)]
pub(super) struct ModelFile {
    pub(super) format: String,
    pub(super) format_version: u32,
    pub(super) n_features: usize,
    pub(super) feature_names: Vec<String>,
    pub(super) max_samples: usize,
    pub(super) contamination: Contamination,
    #[serde(with = "exact")]
    pub(super) offset: f64,
    pub(super) trees: Vec<TreeArrays>,
}

impl TryFrom<ModelFile> for IsolationForest {
    type Error = ForestError;

    fn try_from(file: ModelFile) -> Result<Self, ForestError> {
        if file.format != MODEL_FORMAT || file.format_version != MODEL_FORMAT_VERSION {
            return Err(ForestError::Parse(format!(
                "unsupported model format {:?} version {} (this build reads {MODEL_FORMAT:?} version {MODEL_FORMAT_VERSION})",
                file.format, file.format_version
            )));
        }
        if file.n_features == 0 {
            return Err(ForestError::InvalidModel("n_features is 0".into()));
        }
        Self::assemble(
            file.n_features,
            file.feature_names,
            file.max_samples,
            file.contamination,
            file.offset,
            file.trees,
        )
    }
}

impl Serialize for IsolationForest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct ModelFileRef<'a> {
            format: &'a str,
            format_version: u32,
            n_features: usize,
            feature_names: &'a [String],
            max_samples: usize,
            contamination: Contamination,
            #[serde(with = "exact")]
            offset: f64,
            trees: &'a [TreeArrays],
        }
        ModelFileRef {
            format: MODEL_FORMAT,
            format_version: MODEL_FORMAT_VERSION,
            n_features: self.n_features,
            feature_names: &self.feature_names,
            max_samples: self.max_samples,
            contamination: self.contamination,
            offset: self.offset,
            trees: &self.trees,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IsolationForest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = ModelFile::deserialize(deserializer)?;
        Self::try_from(file).map_err(serde::de::Error::custom)
    }
}

/// The file `tools/sklearn_export.py` writes.
#[derive(Deserialize)]
pub(super) struct SklearnFile {
    pub(super) n_features_in: usize,
    #[serde(default)]
    pub(super) feature_names_in: Option<Vec<String>>,
    pub(super) max_samples: usize,
    pub(super) contamination: Contamination,
    #[serde(with = "exact")]
    pub(super) offset: f64,
    pub(super) estimators: Vec<SklearnEstimator>,
}

/// One estimator's `tree_` arrays, with `features`: the original column of each feature index
/// the tree uses (the exporter resolves sklearn's `estimators_features_` subtleties).
#[derive(Deserialize)]
pub(super) struct SklearnEstimator {
    pub(super) children_left: Vec<i64>,
    pub(super) children_right: Vec<i64>,
    pub(super) feature: Vec<i64>,
    #[serde(with = "exact::vec")]
    pub(super) threshold: Vec<f64>,
    pub(super) n_node_samples: Vec<u64>,
    pub(super) features: Vec<i64>,
}

impl SklearnEstimator {
    /// Maps the tree's feature indices to the model's columns.
    pub(super) fn into_tree(self, n_features: usize) -> Result<TreeArrays, TreeError> {
        let mut feature = self.feature;
        for (i, f) in feature.iter_mut().enumerate() {
            if self.children_left.get(i) == Some(&TREE_LEAF) {
                continue;
            }
            let column = usize::try_from(*f)
                .ok()
                .and_then(|f| self.features.get(f))
                .ok_or(TreeError::UnmappedFeature {
                    node: i,
                    feature: *f,
                    n: self.features.len(),
                })?;
            if *column < 0 || *column as u64 >= n_features as u64 {
                return Err(TreeError::ColumnOutOfRange {
                    feature: *f,
                    column: *column,
                    n_features,
                });
            }
            *f = *column;
        }
        Ok(TreeArrays {
            children_left: self.children_left,
            children_right: self.children_right,
            feature,
            threshold: self.threshold,
            n_node_samples: self.n_node_samples,
        })
    }
}

impl Serialize for Contamination {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Contamination::Auto => serializer.serialize_str("auto"),
            Contamination::Fraction(f) => exact::serialize(f, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Contamination {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "auto" {
            Ok(Contamination::Auto)
        } else {
            exact::parse(&text)
                .map(Contamination::Fraction)
                .map_err(serde::de::Error::custom)
        }
    }
}

/// Floats as decimal strings, which round-trip exactly (see the module docs).
pub(super) mod exact {
    use std::fmt;

    use serde::{
        Deserializer, Serializer,
        de::{Error, Visitor},
    };

    pub fn serialize<S: Serializer>(v: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        // `{:?}` is the shortest text that parses back to the same f64.
        serializer.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_str(ExactF64)
    }

    /// A text that is not a decimal number.
    #[derive(Debug, thiserror::Error)]
    #[error("{0:?} is not a decimal number")]
    pub struct NotDecimal(pub String);

    pub fn parse(text: &str) -> Result<f64, NotDecimal> {
        text.trim()
            .parse::<f64>()
            .map_err(|_| NotDecimal(text.to_owned()))
    }

    struct ExactF64;

    impl Visitor<'_> for ExactF64 {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number written as a decimal string, e.g. \"0.25\" (exact round trip)")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<f64, E> {
            parse(v).map_err(E::custom)
        }
    }

    pub mod vec {
        use std::fmt;

        use serde::{
            Deserialize, Deserializer, Serializer,
            de::{SeqAccess, Visitor},
            ser::SerializeSeq,
        };

        struct Item(f64);

        impl<'de> Deserialize<'de> for Item {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                super::deserialize(deserializer).map(Item)
            }
        }

        pub fn serialize<S: Serializer>(v: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(v.len()))?;
            for x in v {
                seq.serialize_element(&format!("{x:?}"))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<f64>, D::Error> {
            struct Items;
            impl<'de> Visitor<'de> for Items {
                type Value = Vec<f64>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an array of decimal strings")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f64>, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                    while let Some(Item(x)) = seq.next_element()? {
                        out.push(x);
                    }
                    Ok(out)
                }
            }
            deserializer.deserialize_seq(Items)
        }
    }
}
