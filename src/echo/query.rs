//! What the pipeline is asked about: the query image and what is known of it.

use std::path::PathBuf;

use crate::dataset::{DatasetRoot, ImageEntry, PathError};

/// The query image and what is known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub image: PathBuf,
    /// The dataset folder (`DS-MVTec`, `VisA`, ...), for knowledge lookup.
    pub dataset: Option<String>,
    pub category: Option<String>,
    /// Set when the image is an MMAD entry (its template lists become usable).
    pub entry: Option<QueryEntry>,
}

/// An MMAD entry: key, record and the root its paths are relative to.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryEntry {
    pub key: String,
    pub entry: ImageEntry,
    pub root: DatasetRoot,
}

impl Query {
    /// A loose image; dataset and category are read from an MMAD/MVTec-style path
    /// (`.../<dataset>/<category>/test/...`) when it has one.
    pub fn image(path: impl Into<PathBuf>) -> Query {
        let image = path.into();
        let category = crate::dataset::category_from_path(&image);
        let dataset = category
            .as_ref()
            .and_then(|_| crate::dataset::dataset_from_path(&image));
        Query {
            image,
            dataset,
            category,
            entry: None,
        }
    }

    /// An entry of an MMAD dataset.
    pub fn from_entry(
        root: &DatasetRoot,
        key: &str,
        entry: &ImageEntry,
    ) -> Result<Query, PathError> {
        Ok(Query {
            image: root.resolve(key)?,
            dataset: Some(crate::dataset::dataset_of(key).to_string()).filter(|s| !s.is_empty()),
            category: Some(crate::dataset::category_of(key).to_string()).filter(|s| !s.is_empty()),
            entry: Some(QueryEntry {
                key: key.to_string(),
                entry: entry.clone(),
                root: root.clone(),
            }),
        })
    }
}
