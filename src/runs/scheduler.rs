//! `--shard auto`: the shard a process runs, taken from the job scheduler that
//! started it, so one job script serves every shard.
//!
//! - Slurm job arrays (`sbatch --array=0-3`): `SLURM_ARRAY_TASK_ID` and
//!   `SLURM_ARRAY_TASK_COUNT`, less `SLURM_ARRAY_TASK_MIN` when the array does not
//!   start at 0 (`--array=1-4` is shards 0..3 of 4). An array with gaps or a step
//!   (`--array=0,2,5`, `0-6:2`) has no such mapping and is refused by name.
//! - Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX`; Kubernetes does not tell a pod
//!   the job's completions, so the count comes from `--shard-count` or
//!   `ECHO_SHARD_COUNT` (set it from the same number as `completions`).
//!
//! Slurm is read first: a Slurm job that happens to carry a Kubernetes variable is
//! still a Slurm job.

use super::manifest::{Placement, Shard};

/// Variable a Kubernetes job sets to the shard count (Kubernetes has none of its own).
pub const SHARD_COUNT_VAR: &str = "ECHO_SHARD_COUNT";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "--shard auto found no job scheduler: set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (a Slurm job array) or JOB_COMPLETION_INDEX (a Kubernetes Indexed Job), or give --shard I/N"
    )]
    NoScheduler,
    #[error("{name} is `{value}`, not a whole number")]
    NotANumber { name: &'static str, value: String },
    #[error(
        "JOB_COMPLETION_INDEX is set but the shard count is not: give --shard-count N or set {SHARD_COUNT_VAR} (the Job's completions)"
    )]
    NoCount,
    #[error(
        "{scheduler} gives shard {index} of {count}: the array must number its tasks consecutively from its first (no step, no gaps), so that the shards are 0..{count}"
    )]
    OutOfRange {
        scheduler: &'static str,
        index: i64,
        count: u32,
    },
}

/// The shard and where it runs, from the variables `env` returns.
///
/// `count` is `--shard-count`, used for Kubernetes (Slurm gives its own).
pub fn shard_from_environment(
    env: &dyn Fn(&str) -> Option<String>,
    count: Option<u32>,
) -> Result<(Shard, Placement), SchedulerError> {
    let number = |name: &'static str| -> Result<Option<i64>, SchedulerError> {
        match env(name) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| SchedulerError::NotANumber { name, value }),
        }
    };
    let host = |preferred: Option<String>| {
        preferred
            .filter(|h| !h.is_empty())
            .or_else(|| env("HOSTNAME").filter(|h| !h.is_empty()))
            .unwrap_or_else(host_name)
    };
    if let Some(task) = number("SLURM_ARRAY_TASK_ID")? {
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let Some(slurm_count) = number("SLURM_ARRAY_TASK_COUNT")? else {
            return Err(SchedulerError::NoScheduler);
        };
        let count = u32::try_from(slurm_count).unwrap_or(0);
        let shard = checked("Slurm", task - min, count)?;
        let job = env("SLURM_ARRAY_JOB_ID").or_else(|| env("SLURM_JOB_ID"));
        let placement = Placement {
            host: host(env("SLURMD_NODENAME")),
            scheduler: "slurm".into(),
            job,
        };
        return Ok((shard, placement));
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = match count {
            Some(c) => c,
            None => {
                let c = number(SHARD_COUNT_VAR)?.ok_or(SchedulerError::NoCount)?;
                u32::try_from(c).unwrap_or(0)
            }
        };
        let shard = checked("Kubernetes", index, count)?;
        // A pod's host name is the pod's name, which names the job and the index.
        let host = host(None);
        let placement = Placement {
            job: Some(host.clone()),
            host,
            scheduler: "kubernetes".into(),
        };
        return Ok((shard, placement));
    }
    Err(SchedulerError::NoScheduler)
}

fn checked(scheduler: &'static str, index: i64, count: u32) -> Result<Shard, SchedulerError> {
    match u32::try_from(index) {
        Ok(i) if i < count => Ok(Shard { index: i, count }),
        _ => Err(SchedulerError::OutOfRange {
            scheduler,
            index,
            count,
        }),
    }
}

/// This machine's host name, or `unknown`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(
        vars: &[(&str, &str)],
        count: Option<u32>,
    ) -> Result<(Shard, Placement), SchedulerError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        shard_from_environment(&|name| map.get(name).cloned(), count)
    }

    #[test]
    fn slurm_arrays_give_their_task_as_the_shard() {
        let (shard, placement) = with(
            &[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_JOB_ID", "81234"),
                ("SLURMD_NODENAME", "gpu-07"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(shard, Shard { index: 2, count: 4 });
        assert_eq!(placement.scheduler, "slurm");
        assert_eq!(placement.host, "gpu-07");
        assert_eq!(placement.job.as_deref(), Some("81234"));
        // --array=1-4: the first task is shard 0.
        let (shard, _) = with(
            &[
                ("SLURM_ARRAY_TASK_ID", "4"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(shard, Shard { index: 3, count: 4 });
        // --array=0-6:2 has 4 tasks numbered 0, 2, 4, 6: task 6 is no shard of 4.
        let err = with(
            &[
                ("SLURM_ARRAY_TASK_ID", "6"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("consecutively"), "{err}");
    }

    #[test]
    fn kubernetes_indexed_jobs_need_the_count() {
        let vars = [
            ("JOB_COMPLETION_INDEX", "1"),
            ("HOSTNAME", "mmad-qwen-1-x7k2p"),
        ];
        assert_eq!(with(&vars, None).unwrap_err(), SchedulerError::NoCount);
        let (shard, placement) = with(&vars, Some(3)).unwrap();
        assert_eq!(shard, Shard { index: 1, count: 3 });
        assert_eq!(placement.scheduler, "kubernetes");
        assert_eq!(placement.host, "mmad-qwen-1-x7k2p");
        let mut with_var = vars.to_vec();
        with_var.push((SHARD_COUNT_VAR, "2"));
        assert_eq!(
            with(&with_var, None).unwrap().0,
            Shard { index: 1, count: 2 }
        );
        // The flag wins over the variable.
        assert_eq!(with(&with_var, Some(5)).unwrap().0.count, 5);
        assert!(matches!(
            with(&[("JOB_COMPLETION_INDEX", "3")], Some(3)),
            Err(SchedulerError::OutOfRange { .. })
        ));
    }

    #[test]
    fn no_scheduler_or_garbage_is_refused_by_name() {
        assert_eq!(with(&[], Some(4)).unwrap_err(), SchedulerError::NoScheduler);
        let err = with(
            &[
                ("SLURM_ARRAY_TASK_ID", "two"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("SLURM_ARRAY_TASK_ID is `two`"),
            "{err}"
        );
        // Slurm first, even where a Kubernetes variable is also set.
        let (shard, placement) = with(
            &[
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
                ("JOB_COMPLETION_INDEX", "1"),
            ],
            Some(2),
        )
        .unwrap();
        assert_eq!((shard.index, placement.scheduler.as_str()), (0, "slurm"));
        assert!(!placement.host.is_empty());
    }
}
