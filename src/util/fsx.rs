//! File-system helpers: every file we replace goes through a temporary file and a
//! rename, so a crash or a full disk never leaves a half-written file behind; every
//! rename that publishes something is followed by an fsync of its folder, so a power
//! cut cannot undo it; and files we append to or lock are opened without following
//! symlinks, so a planted link cannot redirect our writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// How many symlinks `write_target` follows before it calls the chain a loop
/// (the same bound Linux puts on path resolution).
const MAX_LINK_HOPS: usize = 40;

/// Replaces `path` with `bytes` atomically (same-directory temp file, fsync, rename,
/// fsync of the folder).
///
/// When `path` is a symlink the file it points to is replaced and the link is kept:
/// a user who linked their settings or knowledge file into a dotfiles repository
/// gets that file updated, never a plain file silently put in the link's place.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file_with(&write_target(path)?, |f| f.write_all(bytes))
}

/// [`atomic_write`] for content produced piece by piece, so it never has to be held
/// in memory whole.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    replace_file_with(&write_target(path)?, write)
}

/// [`atomic_write`] for a file inside a folder the tool owns (a run's manifest, a
/// journal rewritten without its errors): nothing we put there is a link, so a
/// symlink in the file's place was planted, and is refused rather than followed to
/// overwrite whatever it points at. A link swapped in after the check is replaced
/// by the rename itself, never written through.
pub fn atomic_write_no_follow(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write_no_follow_with(path, |f| f.write_all(bytes))
}

/// [`atomic_write_no_follow`] for content produced piece by piece (a journal
/// rewritten by `--retry-errors`, streamed rather than held whole).
pub fn atomic_write_no_follow_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    refuse_non_regular(path)?;
    replace_file_with(path, write)
}

/// Refuses a symlink or anything but a regular file at `path`; absent is fine.
pub fn refuse_non_regular(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => Err(not_regular(path, &meta)),
        _ => Ok(()),
    }
}

/// Refuses a symlink or anything but a folder at `dir`; absent is fine.
pub fn refuse_non_regular_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(not_regular(dir, &meta)),
        _ => Ok(()),
    }
}

fn replace_file_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = parent_or_dot(path);
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".echo-tmp-");
    // A temporary file is private (0600); the file it becomes should keep the mode the
    // old one had, or get an ordinary file's mode (0644 less the umask) when new.
    match std::fs::metadata(path) {
        Ok(meta) => {
            if !meta.is_file() {
                return Err(not_regular(path, &meta));
            }
            builder.permissions(meta.permissions());
        }
        Err(_) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                builder.permissions(std::fs::Permissions::from_mode(0o644));
            }
        }
    }
    let mut tmp = builder.tempfile_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// The file a write to `path` should replace: `path` itself, or, when it is a symlink,
/// the end of its chain of links (which need not exist yet).
pub fn write_target(path: &Path) -> std::io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&current)?;
                current = if link.is_absolute() {
                    link
                } else {
                    parent_or_dot(&current).join(link)
                };
            }
            _ => return Ok(current),
        }
    }
    Err(std::io::Error::other(format!(
        "{} is a chain of more than {MAX_LINK_HOPS} symlinks (a loop?)",
        path.display()
    )))
}

/// Flushes a folder's entries (a rename or create inside it) to disk. Without it a
/// power cut can bring back the old name after a rename we already reported done.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Renames `from` to `to` and makes both folders' entries durable.
pub fn rename_durable(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    let (a, b) = (parent_or_dot(from), parent_or_dot(to));
    sync_dir(b)?;
    if a != b {
        sync_dir(a)?;
    }
    Ok(())
}

/// Opens (creating if absent) a file we lock, append to or rewrite in place, without
/// following a symlink at its last component, and refuses anything but a regular
/// file. A `.lock` or journal planted as a link to another file must never get that
/// file truncated or written.
pub fn open_regular_for_write(path: &Path, options: &OpenOptions) -> std::io::Result<File> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        return Err(not_regular(path, &meta));
    }
    let mut options = options.clone();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NOFOLLOW closes the gap between the check above and the open;
        // O_NONBLOCK keeps a FIFO swapped in at that moment from hanging us.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| {
        if is_symlink_refusal(&e) {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is a symlink; refusing to follow it", path.display()),
            )
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(file)
}

/// Opens a file for reading only if it is a regular file (symlinks to one are fine:
/// datasets are often linked into place). Devices, FIFOs and folders are refused
/// before a byte is read, so `/dev/zero` cannot fill memory and a FIFO cannot hang us.
pub fn open_regular_for_read(path: &Path) -> std::io::Result<File> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(file)
}

/// Reads a regular file of at most `limit` bytes. The size is checked from metadata
/// before reading and the read itself stops one byte past the limit, so a file that
/// grows while we read is refused too, never buffered whole.
pub fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular_for_read(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(too_large(path, len, limit));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, bytes.len() as u64, limit));
    }
    Ok(bytes)
}

/// The most we read of one text file a user hands us (mmad.json, answers, knowledge,
/// settings, tables, manifests): far above any real one (MMAD's mmad.json is about
/// 30 MB), low enough that `/dev/zero` or a mistaken huge file is an error, not an OOM.
pub const TEXT_FILE_LIMIT: u64 = 256 << 20;

/// Reads a UTF-8 text file through [`read_limited`]: regular files only, at most
/// `limit` bytes. Errors keep their kind (a missing file is still `NotFound`).
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    let bytes = read_limited(path, limit).map_err(|e| without_path(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// `e` without the leading path this module's own errors start with, for callers that
/// name the path themselves (as with std's errors): "cannot read X: is a folder; ...",
/// not "cannot read X: X is a folder; ...".
pub fn without_path(path: &Path, e: std::io::Error) -> std::io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    let text = e.to_string();
    match text.strip_prefix(&format!("{} ", path.display())) {
        Some(rest) => std::io::Error::new(e.kind(), rest.to_string()),
        None => e,
    }
}

fn too_large(path: &Path, len: u64, limit: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} is {len} bytes, over the limit of {limit} bytes",
            path.display()
        ),
    )
}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> std::io::Error {
    let ft = meta.file_type();
    let what = if ft.is_dir() {
        "a folder"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_file() {
        "a file, not a folder"
    } else {
        "not a regular file (a device, FIFO or socket)"
    };
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{} is {what}; refusing to use it", path.display()),
    )
}

fn is_symlink_refusal(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        // Linux answers O_NOFOLLOW on a link with ELOOP; the BSDs with EMLINK.
        matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EMLINK))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

fn parent_or_dot(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// SHA-256 of a file's contents as lower-case hex, streamed so large files use little memory.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = open_regular_for_read(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// SHA-256 of bytes as lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn replaced_files_keep_their_mode_and_new_ones_are_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.txt");
        atomic_write(&fresh, b"a").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        // What an ordinary create gives under this process's umask, less execute bits.
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, b"a").unwrap();
        let umasked = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o644;
        assert_eq!(mode, umasked, "{mode:o} vs {umasked:o}");
        let script = dir.path().join("run.sh");
        std::fs::write(&script, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
        atomic_write(&script, b"#!/bin/sh\necho hi\n").unwrap();
        let mode = std::fs::metadata(&script).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
    }

    #[cfg(unix)]
    #[test]
    fn writing_through_a_symlink_replaces_its_target_and_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/settings.toml");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("settings.toml");
        std::os::unix::fs::symlink("dotfiles/settings.toml", &link).unwrap();
        atomic_write(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A dangling link gets its target created.
        let dangling = dir.path().join("k.json");
        std::os::unix::fs::symlink("dotfiles/k.json", &dangling).unwrap();
        atomic_write(&dangling, b"{}").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("dotfiles/k.json")).unwrap(),
            b"{}"
        );
        // A loop is an error, not a hang.
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(atomic_write(&a, b"x").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn files_we_write_in_place_are_never_reached_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("thesis.tex");
        std::fs::write(&victim, b"precious").unwrap();
        let lock = dir.path().join(".lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let mut opts = OpenOptions::new();
        opts.create(true).read(true).write(true).truncate(false);
        let err = open_regular_for_write(&lock, &opts).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        let mut truncating = OpenOptions::new();
        truncating.create(true).write(true).truncate(true);
        assert!(open_regular_for_write(&lock, &truncating).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A folder in a file's place is refused too; a plain file opens.
        let sub = dir.path().join("journal.jsonl");
        std::fs::create_dir(&sub).unwrap();
        assert!(open_regular_for_write(&sub, &opts).is_err());
        assert!(open_regular_for_write(&dir.path().join("new.jsonl"), &opts).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_before_any_read() {
        let err = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.png");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Would block forever if we opened it for reading.
        assert!(read_limited(&fifo, 1 << 20).is_err());
        assert!(sha256_file(&fifo).is_err());
        let big = dir.path().join("big.bin");
        std::fs::write(&big, vec![0u8; 4096]).unwrap();
        let err = read_limited(&big, 4095).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
        assert_eq!(read_limited(&big, 4096).unwrap().len(), 4096);
    }

    #[test]
    fn text_is_read_through_a_limit_and_keeps_error_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mmad.json");
        std::fs::write(&p, "{\"é\": 1}").unwrap();
        assert_eq!(read_text_limited(&p, 100).unwrap(), "{\"é\": 1}");
        let err = read_text_limited(&p, 5).unwrap_err();
        assert!(
            err.to_string().contains("over the limit of 5 bytes"),
            "{err}"
        );
        std::fs::write(&p, b"{\"a\": \xff}").unwrap();
        let err = read_text_limited(&p, 100).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("not UTF-8 text"), "{err}");
        // The caller names the path; the error does not repeat it.
        let err = read_text_limited(dir.path(), 100).unwrap_err().to_string();
        assert_eq!(err, "is a folder; refusing to use it");
        let missing = read_text_limited(&dir.path().join("none.toml"), 100).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/file.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file.json")]);
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_bytes(b"abc"));
    }
}
