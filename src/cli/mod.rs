//! Subcommand implementations. Each returns the process exit code, or an error
//! that `main` prints as one sentence.

pub mod dataset;
pub mod knowledge;
pub mod score;
