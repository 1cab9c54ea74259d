//! One way to print an error with its causes.
//!
//! Our error types name their cause in their own message (`cannot read {path}:
//! {source}`) so that a plain `to_string()` is already complete; walking the chain
//! naively then prints every cause twice ("X: X"). [`chain`] walks the sources and
//! adds only what the text so far does not already say.

use std::error::Error;

/// The error's message followed by each cause that adds something, joined by `: `.
pub fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot read {path}: {source}")]
        Read {
            path: String,
            #[source]
            source: std::io::Error,
        },
        #[error("the run failed")]
        Run(#[source] std::io::Error),
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Outer::Read {
            path: "a.json".into(),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(chain(&e), "cannot read a.json: disk on fire");
        let wrapped = anyhow::Error::new(e).context("loading settings");
        assert_eq!(
            chain(wrapped.as_ref()),
            "loading settings: cannot read a.json: disk on fire"
        );
    }

    #[test]
    fn a_cause_the_message_leaves_out_is_added() {
        let e = Outer::Run(std::io::Error::other("connection reset"));
        assert_eq!(chain(&e), "the run failed: connection reset");
    }
}
