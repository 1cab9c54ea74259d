//! The integration tests of the library and the command line, one module per
//! concern, in one binary: one link instead of one per file, and one place for the
//! helpers they share (`common`). The app's tests are the `gui` binary.

#[path = "../common/mod.rs"]
mod common;

mod anomaly;
mod calibration;
mod cli;
mod compat;
mod cost;
mod feature_pins;
mod inspect;
mod knowledge;
mod local;
mod map_expert;
mod mllm;
mod model_download;
mod pipeline;
mod probe;
mod protocols;
mod readers;
mod rerun;
mod retrieval;
mod runner;
mod runs;
