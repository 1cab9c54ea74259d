//! Curating knowledge with the pipeline in the loop: which questions an edit
//! reaches ([`impact`]) and what the Knowledge Guide would send for one question
//! ([`preview`]). Both run the pipeline's own rules, so they sit above `echo`,
//! which reads knowledge; `knowledge` itself never calls the pipeline.

pub mod impact;
pub mod preview;
