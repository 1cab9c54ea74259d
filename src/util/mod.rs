//! Small, dependency-light helpers shared by the core modules.

pub mod dirswap;
pub mod error;
pub mod fsx;
pub mod html;
pub mod jsonl;
pub mod pyfloat;
pub mod pyjson;
pub mod serde_path;
pub mod time;
