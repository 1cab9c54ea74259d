//! Putting a freshly written folder in the place of another without a moment in
//! which neither exists. On Linux the two are exchanged in one step
//! (`renameat2(RENAME_EXCHANGE)`); elsewhere, or on a file system that cannot
//! exchange, the old folder is renamed aside first and put back if the second
//! rename fails. Either way the old folder survives until the caller removes it,
//! so a caller can keep it until it is sure the new one is in place.

use std::path::{Path, PathBuf};

use super::fsx::{rename_durable, sync_dir};

/// Why a swap failed, and whether it happened anyway.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct SwapError {
    #[source]
    pub source: std::io::Error,
    /// `dest` already holds the staged folder and only flushing the folders to disk
    /// failed: nothing may be deleted then, the old folder is the only other copy.
    pub swapped: bool,
}

impl SwapError {
    fn before(source: std::io::Error) -> Self {
        SwapError {
            source,
            swapped: false,
        }
    }

    fn after(source: std::io::Error) -> Self {
        SwapError {
            source,
            swapped: true,
        }
    }
}

/// Publishes the folder `staged` at `dest` (both in the same file system; `staged`
/// is normally a sibling). Returns where the previous `dest` now lives, for the
/// caller to remove, or `None` when `dest` did not exist. Both folders' entries
/// are flushed to disk before this returns. On an error with `swapped` false,
/// `staged` and `dest` are as they were.
pub fn swap_in_dir(staged: &Path, dest: &Path) -> Result<Option<PathBuf>, SwapError> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::rename(staged, dest).map_err(SwapError::before)?;
            sync_parents(staged, dest).map_err(SwapError::after)?;
            return Ok(None);
        }
        Err(e) => return Err(SwapError::before(e)),
        Ok(_) => {}
    }
    match exchange(staged, dest) {
        Ok(()) => {
            sync_parents(staged, dest).map_err(SwapError::after)?;
            Ok(Some(staged.to_path_buf()))
        }
        Err(e) if cannot_exchange(&e) => swap_aside(staged, dest).map(Some),
        Err(e) => Err(SwapError::before(e)),
    }
}

/// The portable way: `dest` -> aside, `staged` -> `dest`, undone if the second fails.
fn swap_aside(staged: &Path, dest: &Path) -> Result<PathBuf, SwapError> {
    let aside = aside_name(dest).map_err(SwapError::before)?;
    rename_durable(dest, &aside).map_err(|e| {
        // Renamed but not flushed counts as moved: put it back while we can.
        if std::fs::symlink_metadata(dest).is_err() {
            let _ = std::fs::rename(&aside, dest);
        }
        SwapError::before(e)
    })?;
    if let Err(e) = std::fs::rename(staged, dest) {
        // Put the old folder back so the caller still has what it had.
        let _ = rename_durable(&aside, dest);
        return Err(SwapError::before(e));
    }
    sync_parents(staged, dest).map_err(SwapError::after)?;
    Ok(aside)
}

/// A name beside `dest` that nothing uses yet, hidden like our staging folders.
fn aside_name(dest: &Path) -> std::io::Result<PathBuf> {
    let parent = parent_or_dot(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for attempt in 0..1000u32 {
        let candidate = parent.join(format!(
            ".echo-old-{name}-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        if std::fs::symlink_metadata(&candidate).is_err() {
            return Ok(candidate);
        }
    }
    Err(std::io::Error::other(format!(
        "no free name beside {} to move it aside",
        dest.display()
    )))
}

fn sync_parents(a: &Path, b: &Path) -> std::io::Result<()> {
    let (pa, pb) = (parent_or_dot(a), parent_or_dot(b));
    sync_dir(pb)?;
    if pa != pb {
        sync_dir(pa)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // The raw system call rather than the libc wrapper: musl and older glibc lack it.
    // SAFETY: two valid NUL-terminated paths that outlive the call; the flags are plain
    // integers, and the call writes no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Whether an exchange failed only because this kernel or file system cannot do it.
fn cannot_exchange(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::Unsupported {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

fn parent_or_dot(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(path: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join(file), text).unwrap();
    }

    #[test]
    fn swaps_in_and_keeps_the_old_folder_for_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("mem");
        let staged = dir.path().join(".staged");
        folder(&dest, "a", "old");
        folder(&staged, "a", "new");
        let old = swap_in_dir(&staged, &dest).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(old.join("a")).unwrap(), "old");
        // Into an absent place there is nothing old.
        let fresh = dir.path().join("fresh");
        folder(&staged, "b", "x");
        assert_eq!(swap_in_dir(&staged, &fresh).unwrap(), None);
        assert_eq!(std::fs::read_to_string(fresh.join("b")).unwrap(), "x");
        assert!(!staged.exists());
    }

    #[test]
    fn the_portable_fallback_swaps_and_puts_the_old_back_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("mem");
        let staged = dir.path().join(".staged");
        folder(&dest, "a", "old");
        folder(&staged, "a", "new");
        let old = swap_aside(&staged, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(old.join("a")).unwrap(), "old");
        // A staged folder that vanished: the second rename fails, the old stays put.
        let err = swap_aside(&dir.path().join("gone"), &dest);
        assert!(err.is_err());
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "new");
    }
}
