//! The Echo pipeline's pieces. For now: reading the chosen option from a reply.

pub mod difflib;
pub mod extract;

pub use extract::{ExtractMethod, ExtractMode, Extraction, extract_answer};
