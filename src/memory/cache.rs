//! An append-only embedding cache per embedder, keyed by the SHA-256 of the image
//! file's bytes, so rebuilding a memory re-embeds only images that changed.
//!
//! Layout: a header line `echo-embedding-cache v1 <dim> <embedder id>\n`, then
//! fixed-size records (32-byte hash, `dim` little-endian f32). A torn last record
//! from an interrupted run is ignored and overwritten by the next append.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::MemoryError;

pub struct EmbeddingCache {
    path: PathBuf,
    dim: usize,
    entries: HashMap<[u8; 32], Vec<f32>>,
    file: File,
}

impl EmbeddingCache {
    /// The cache file for `embedder_id` inside `dir`.
    pub fn path_for(dir: &Path, embedder_id: &str) -> PathBuf {
        let safe: String = embedder_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        dir.join(format!("{safe}.embcache"))
    }

    /// Opens (or creates) the cache for `embedder_id` in `dir`.
    pub fn open(dir: &Path, embedder_id: &str, dim: usize) -> Result<Self, MemoryError> {
        let path = Self::path_for(dir, embedder_id);
        let err = |message: String| MemoryError::Cache {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let header = format!("echo-embedding-cache v1 {dim} {embedder_id}\n");
        let mut file = crate::util::fsx::open_regular_for_write(
            &path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(|e| err(e.to_string()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        let mut entries = HashMap::new();
        if bytes.is_empty() || !bytes.starts_with(header.as_bytes()) {
            // New, foreign or damaged header: start over rather than trust it.
            file.set_len(0).map_err(|e| err(e.to_string()))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| err(e.to_string()))?;
            file.write_all(header.as_bytes())
                .map_err(|e| err(e.to_string()))?;
        } else {
            let record = 32 + dim * 4;
            let body = &bytes[header.len()..];
            let whole = body.len() / record;
            for rec in body.chunks_exact(record) {
                let mut key = [0u8; 32];
                key.copy_from_slice(&rec[..32]);
                let v = rec[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                entries.insert(key, v);
            }
            let good_len = (header.len() + whole * record) as u64;
            if good_len != bytes.len() as u64 {
                file.set_len(good_len).map_err(|e| err(e.to_string()))?;
            }
            file.seek(SeekFrom::Start(good_len))
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(EmbeddingCache {
            path,
            dim,
            entries,
            file,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, sha256_hex: &str) -> Option<&[f32]> {
        let key = decode_key(sha256_hex)?;
        self.entries.get(&key).map(Vec::as_slice)
    }

    /// Remembers a vector and appends it to the file.
    pub fn put(&mut self, sha256_hex: &str, vector: &[f32]) -> Result<(), MemoryError> {
        let Some(key) = decode_key(sha256_hex) else {
            return Ok(());
        };
        if vector.len() != self.dim || self.entries.contains_key(&key) {
            return Ok(());
        }
        let mut rec = Vec::with_capacity(32 + self.dim * 4);
        rec.extend_from_slice(&key);
        rec.extend(vector.iter().flat_map(|x| x.to_le_bytes()));
        self.file.write_all(&rec).map_err(|e| MemoryError::Cache {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        self.entries.insert(key, vector.to_vec());
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), MemoryError> {
        self.file.flush().map_err(|e| MemoryError::Cache {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

fn decode_key(hex_str: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut key).ok()?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let h1 = crate::util::fsx::sha256_bytes(b"one");
        let h2 = crate::util::fsx::sha256_bytes(b"two");
        {
            let mut c = EmbeddingCache::open(dir.path(), "emb/v1", 3).unwrap();
            c.put(&h1, &[1.0, 2.0, 3.0]).unwrap();
            c.put(&h2, &[4.0, 5.0, 6.0]).unwrap();
            c.flush().unwrap();
        }
        let path = EmbeddingCache::path_for(dir.path(), "emb/v1");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap(); // an interrupted append
        let mut c = EmbeddingCache::open(dir.path(), "emb/v1", 3).unwrap();
        assert_eq!(c.get(&h1), Some(&[1.0, 2.0, 3.0][..]));
        assert_eq!(c.get(&h2), None);
        c.put(&h2, &[7.0, 8.0, 9.0]).unwrap();
        c.flush().unwrap();
        let c = EmbeddingCache::open(dir.path(), "emb/v1", 3).unwrap();
        assert_eq!(c.get(&h2), Some(&[7.0, 8.0, 9.0][..]));
        assert_eq!(c.len(), 2);
        // Another embedder (or dimension) never sees these vectors.
        let other = EmbeddingCache::open(dir.path(), "emb/v2", 3).unwrap();
        assert!(other.is_empty());
    }
}
