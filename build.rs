//! Records the git commit the binary is built from, for `--version`: a bug report
//! then names the exact source. Outside a git checkout (a source tarball) the
//! packager can set ECHO_GIT_COMMIT; otherwise it reads `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ECHO_GIT_COMMIT");
    let commit = std::env::var("ECHO_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ECHO_GIT_COMMIT={commit}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}

fn git_commit() -> Option<String> {
    // A new commit moves HEAD or the branch it points at (a loose ref or, once
    // packed, packed-refs); any of them changing reruns this script. Paths come from
    // git itself so that worktrees resolve to their own HEAD and the shared refs.
    let head = git(&["rev-parse", "--git-path", "HEAD"])?;
    let mut watched = vec![
        head.clone(),
        git(&["rev-parse", "--git-path", "packed-refs"])?,
    ];
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(reference) = text.trim().strip_prefix("ref: ")
        && let Some(path) = git(&["rev-parse", "--git-path", reference])
    {
        watched.push(path);
    }
    for path in watched {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
