//! One writer per run folder: a `.lock` file held with an OS file lock while a run
//! writes the folder.
//!
//! The OS releases the lock when the holding process ends in any way (SIGKILL and
//! power loss included), so a crashed run never leaves a folder locked; the file
//! itself stays behind and only names the last holder's pid for messages.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("run folder {} is in use by another run{}", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock the run folder {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while a run writes its folder; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the folder's lock at once or says who holds it; never waits.
    pub fn acquire(run_dir: &Path) -> Result<RunLock, LockError> {
        let io = |source| LockError::Io {
            dir: run_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(run_dir).map_err(io)?;
        let path = run_dir.join(LOCK_FILE);
        // A `.lock` planted as a symlink (or a FIFO) must never get its target
        // truncated below: refuse anything that is not a regular file.
        let mut file = crate::util::fsx::open_regular_for_write(
            &path,
            OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false),
        )
        .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    dir: run_dir.to_path_buf(),
                    pid: read_pid(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Only the holder writes the pid, so a reader never sees a rival's half write
        // except while it is being replaced, which `read_pid` tolerates.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(RunLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = RunLock::acquire(&run).unwrap();
        // A second open file description conflicts even inside one process.
        let err = RunLock::acquire(&run).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("is in use by another run")
                && text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        drop(first);
        let again = RunLock::acquire(&run).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_planted_as_a_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("notes.txt");
        std::fs::write(&victim, b"keep me").unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&victim, run.join(LOCK_FILE)).unwrap();
        let err = RunLock::acquire(&run).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }
}
