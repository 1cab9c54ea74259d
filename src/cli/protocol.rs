//! The test-time protocol flags `run` and `inspect` share (see `echo::protocol`).

use echo_workbench::echo::protocol::{MAX_SAMPLES, Protocol};

/// How each question is asked.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProtocolArgs {
    /// Send the Decision Maker's final request N times (1 to 64; the experts before
    /// it run once) and answer with the majority letter, ties to the tied letter
    /// seen first. Needs --temperature above 0. Every reply is kept in the record.
    #[arg(long, value_name = "N")]
    pub samples: Option<u32>,
    /// Sampling temperature sent with every request of the protocol (0 to 2),
    /// over the endpoint's own setting. (A negative value is read as one, so the
    /// refusal names this flag rather than an unknown `-1`.)
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass sent with every request (above 0, at most 1).
    #[arg(long = "top-p", value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Seed sent with the requests; sample i gets SEED + i (0 + i without it).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Ask once per rotation of the options (n options, n requests, each a whole
    /// pipeline run): right only when every rotation is (MMBench's CircularEval).
    #[arg(long)]
    pub circular: bool,
    /// Show each question's options in one seeded order (from SEED and the
    /// question's dataset index, so shards and resumes agree).
    #[arg(long, value_name = "SEED", conflicts_with = "circular")]
    pub shuffle_options: Option<u64>,
    /// Ask for logprobs (top 20) and record each option letter's probability.
    #[arg(long)]
    pub logprobs: bool,
}

impl ProtocolArgs {
    /// The protocol, refused with the flag to change when it makes no sense.
    pub fn protocol(&self) -> anyhow::Result<Protocol> {
        let p = Protocol {
            samples: self.samples.unwrap_or(1),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            circular: self.circular,
            shuffle_options: self.shuffle_options,
            logprobs: self.logprobs,
            tie_rule: None,
        };
        p.validate()?;
        debug_assert!(p.samples <= MAX_SAMPLES);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        protocol: ProtocolArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<Protocol> {
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        cli.protocol.protocol()
    }

    #[test]
    fn flags_make_the_protocol_and_nonsense_names_its_flag() {
        let p = parse(&["--samples", "5", "--temperature", "0.7", "--seed", "3"]).unwrap();
        assert_eq!((p.samples, p.temperature, p.seed), (5, Some(0.7), Some(3)));
        assert!(parse(&[]).unwrap().is_plain());
        let p = parse(&["--circular", "--logprobs"]).unwrap();
        assert!(p.circular && p.logprobs);
        for (args, flag) in [
            (&["--samples", "0"][..], "--samples"),
            (&["--samples", "65", "--temperature", "1"][..], "--samples"),
            (&["--temperature", "-1"][..], "--temperature"),
            (&["--top-p", "1.5"][..], "--top-p"),
            (&["--samples", "3"][..], "--temperature"),
            (
                &["--circular", "--shuffle-options", "4"][..],
                "--shuffle-options",
            ),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }
}
