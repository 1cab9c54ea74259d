//! Which questions of a dataset a run covers: the selection filters and `--limit`
//! in file order, then an optional shard of the images.
//!
//! Shards split by image, never by question, so every question about one image
//! lands in the same shard (an endpoint's prefix cache sees the image once, and a
//! shard's journal holds whole conversations). The shard of an image is a pure
//! function of its key (SHA-256, not Rust's randomly seeded hasher), so every
//! machine computes the same split and the N shards of a selection partition it
//! exactly.

use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::manifest::{Selection, Shard};
use crate::dataset::{MmadDataset, QuestionRef, QuestionType, category_of, dataset_of};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("the dataset has no dataset folder `{name}` (it has: {known})")]
    UnknownDataset { name: String, known: String },
    #[error("the dataset has no category `{name}` (it has: {known})")]
    UnknownCategory { name: String, known: String },
    #[error("unknown question type `{name}`: use one of {known}")]
    UnknownType { name: String, known: String },
    #[error("the dataset has {count} questions, so it has no question number {index}")]
    UnknownIndex { index: usize, count: usize },
    #[error("--limit must be at least 1")]
    ZeroLimit,
    #[error("the selection matches no question of the dataset")]
    Empty,
    #[error("`{text}` is not a shard: write I/N with 0 <= I < N, e.g. 0/4")]
    BadShard { text: String },
}

impl FromStr for Shard {
    type Err = SelectError;

    /// `I/N`, 0-based: `0/4` is the first of four shards.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SelectError::BadShard {
            text: s.to_string(),
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard (of `count`) an image key belongs to: the first 8 bytes of the key's
/// SHA-256, big-endian, modulo `count`.
pub fn shard_of(key: &str, count: u32) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
}

/// An MMAD type name, case-insensitively, or its initials (`AD`, `DC`, ... `OD`),
/// as MMAD spells it.
pub fn parse_type_name(s: &str) -> Result<String, SelectError> {
    let t = s.trim();
    for known in QuestionType::KNOWN {
        let initials: String = known
            .as_str()
            .split(' ')
            .filter_map(|w| w.chars().next())
            .collect();
        if known.as_str().eq_ignore_ascii_case(t) || initials.eq_ignore_ascii_case(t) {
            return Ok(known.as_str().to_string());
        }
    }
    Err(SelectError::UnknownType {
        name: t.to_string(),
        known: known_types(),
    })
}

fn known_types() -> String {
    QuestionType::KNOWN
        .map(|k| k.as_str().to_string())
        .join(", ")
}

fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The questions a run covers, in file order: filters, then `limit`, then `shard`.
///
/// A filter naming something the dataset does not have is an error (a typo would
/// otherwise silently select nothing), and so is a selection with no question.
/// A shard may be empty (a tiny selection split many ways).
pub fn select<'a>(
    dataset: &'a MmadDataset,
    selection: &Selection,
    shard: Option<Shard>,
) -> Result<Vec<QuestionRef<'a>>, SelectError> {
    let keys = || dataset.entries.keys().map(String::as_str);
    let datasets = distinct(keys().map(dataset_of));
    for name in &selection.datasets {
        if !datasets.contains(&name.as_str()) {
            return Err(SelectError::UnknownDataset {
                name: name.clone(),
                known: datasets.join(", "),
            });
        }
    }
    let categories = distinct(keys().map(category_of));
    for name in &selection.categories {
        if !categories.contains(&name.as_str()) {
            return Err(SelectError::UnknownCategory {
                name: name.clone(),
                known: categories.join(", "),
            });
        }
    }
    for name in &selection.types {
        let in_file = dataset
            .questions()
            .any(|q| q.question.qtype.as_str() == name);
        if !in_file && !QuestionType::parse(name).is_known() {
            return Err(SelectError::UnknownType {
                name: name.clone(),
                known: known_types(),
            });
        }
    }
    let indices: std::collections::HashSet<usize> = selection.indices.iter().copied().collect();
    if let Some(&index) = selection.indices.iter().max() {
        let count = dataset.questions().count();
        if index >= count {
            return Err(SelectError::UnknownIndex { index, count });
        }
    }
    if selection.limit == Some(0) {
        return Err(SelectError::ZeroLimit);
    }
    let wanted = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
    let chosen: Vec<QuestionRef<'a>> = dataset
        .questions()
        .filter(|q| {
            wanted(&selection.datasets, dataset_of(q.key))
                && wanted(&selection.categories, category_of(q.key))
                && wanted(&selection.types, q.question.qtype.as_str())
                && (indices.is_empty() || indices.contains(&q.index))
        })
        .take(selection.limit.unwrap_or(usize::MAX))
        .collect();
    if chosen.is_empty() {
        return Err(SelectError::Empty);
    }
    Ok(match shard {
        Some(s) => chosen
            .into_iter()
            .filter(|q| shard_of(q.key, s.count) == s.index)
            .collect(),
        None => chosen,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn sample() -> MmadDataset {
        MmadDataset::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample/mmad.json"))
            .unwrap()
    }

    fn indices(qs: &[QuestionRef<'_>]) -> Vec<usize> {
        qs.iter().map(|q| q.index).collect()
    }

    #[test]
    fn filters_keep_file_order_and_limit_applies_after_them() {
        let ds = sample();
        let all = select(&ds, &Selection::default(), None).unwrap();
        assert_eq!(indices(&all), (0..210).collect::<Vec<_>>());

        let sel = Selection {
            categories: vec!["chip".into()],
            types: vec!["Anomaly Detection".into()],
            ..Selection::default()
        };
        let ad_chip = select(&ds, &sel, None).unwrap();
        assert!(!ad_chip.is_empty());
        assert!(ad_chip.iter().all(
            |q| q.key.contains("/chip/") && q.question.qtype == QuestionType::AnomalyDetection
        ));
        assert!(indices(&ad_chip).is_sorted());

        let limited = select(
            &ds,
            &Selection {
                limit: Some(3),
                ..sel.clone()
            },
            None,
        )
        .unwrap();
        assert_eq!(indices(&limited), indices(&ad_chip)[..3]);
    }

    #[test]
    fn indices_pick_exactly_those_questions_within_the_filters() {
        let ds = sample();
        let sel = Selection {
            indices: vec![17, 3, 150, 4],
            ..Selection::default()
        };
        assert_eq!(indices(&select(&ds, &sel, None).unwrap()), [3, 4, 17, 150]);
        // The other filters still apply: a category without those questions is empty.
        let chip = select(
            &ds,
            &Selection {
                categories: vec!["chip".into()],
                ..Selection::default()
            },
            None,
        )
        .unwrap();
        let first_chip = chip[0].index;
        let both = Selection {
            categories: vec!["chip".into()],
            indices: vec![first_chip, 209],
            ..Selection::default()
        };
        let picked = indices(&select(&ds, &both, None).unwrap());
        assert!(picked.contains(&first_chip), "{picked:?}");
        assert!(
            picked.iter().all(|i| chip.iter().any(|q| q.index == *i)),
            "{picked:?}"
        );
        let e = select(
            &ds,
            &Selection {
                indices: vec![210],
                ..Selection::default()
            },
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("210") && e.contains("no question number"), "{e}");
    }

    #[test]
    fn unknown_filters_and_empty_selections_are_errors() {
        let ds = sample();
        let err = |sel: Selection| select(&ds, &sel, None).unwrap_err().to_string();
        let e = err(Selection {
            datasets: vec!["VisA".into()],
            ..Selection::default()
        });
        assert!(e.contains("`VisA`") && e.contains("Sample"), "{e}");
        let e = err(Selection {
            categories: vec!["bottle".into()],
            ..Selection::default()
        });
        assert!(e.contains("`bottle`") && e.contains("washer"), "{e}");
        let e = err(Selection {
            types: vec!["Defect Guessing".into()],
            ..Selection::default()
        });
        assert!(e.contains("Anomaly Detection"), "{e}");
        assert!(
            err(Selection {
                limit: Some(0),
                ..Selection::default()
            })
            .contains("--limit")
        );
    }

    #[test]
    fn type_names_parse_from_initials() {
        assert_eq!(parse_type_name("dc").unwrap(), "Defect Classification");
        assert_eq!(parse_type_name("object details").unwrap(), "Object Details");
        assert!(parse_type_name("XX").is_err());
    }

    #[test]
    fn shards_parse_and_print() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!((s.index, s.count), (1, 3));
        assert_eq!(s.to_string(), "1/3");
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shard_of_is_a_fixed_function_of_the_key() {
        // First 8 bytes of SHA-256("abc") = ba7816bf8f01cfea, as u64 mod 1000.
        assert_eq!(
            shard_of("abc", 1000),
            (0xba78_16bf_8f01_cfea_u64 % 1000) as u32
        );
        assert_eq!(shard_of("abc", 1), 0);
    }

    #[test]
    fn shards_partition_the_selection_by_image() {
        let ds = sample();
        let sel = Selection {
            limit: Some(150),
            ..Selection::default()
        };
        let whole: BTreeSet<usize> = indices(&select(&ds, &sel, None).unwrap())
            .into_iter()
            .collect();
        for count in [2u32, 3, 7] {
            let mut seen = BTreeSet::new();
            let mut owner = std::collections::HashMap::new();
            for index in 0..count {
                let part = select(&ds, &sel, Some(Shard { index, count })).unwrap();
                for q in &part {
                    assert!(seen.insert(q.index), "question {} in two shards", q.index);
                    assert_eq!(*owner.entry(q.key).or_insert(index), index, "{}", q.key);
                }
            }
            assert_eq!(seen, whole, "{count} shards");
        }
    }
}
