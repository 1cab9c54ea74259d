//! Subcommand implementations. Each returns the process exit code, or an error
//! that `main` prints as one sentence.

pub mod bench;
pub mod dataset;
pub mod export;
pub mod inspect;
pub mod knowledge;
pub mod memory;
pub mod merge;
pub mod mock_server;
pub mod probe;
pub mod run;
pub mod score;
pub mod workspace;
