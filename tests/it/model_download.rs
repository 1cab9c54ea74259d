//! `local::download` and the `model` command against the fake hub of
//! `common::fake_hub`: the cache layout, resuming, checksums, gated and missing
//! repositories, cancelling.

use std::sync::atomic::Ordering;

use echo_workbench::jobs::CancelToken;
use echo_workbench::local::download::{DownloadError, DownloadProgress, download};
use echo_workbench::local::{ModelDir, ModelSource};
use echo_workbench::util::error::chain;
use hyper::Method;

use crate::common::fake_hub::*;

#[test]
fn a_download_lands_in_the_hf_cache_layout_and_opens_as_an_hf_source() {
    let fake = FakeHub::start(HubState::new());
    let hub = fake.hub(None);
    let (done, reports) = fake.fetch(&hub, REPO).unwrap();

    let repo_dir = fake.cache.path().join("hub/models--tiny-org--tiny-qwen3vl");
    assert_eq!(done.snapshot, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(done.commit, COMMIT);
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(done.files, SERVED, "README.md is not a model file");
    assert!(!done.snapshot.join("README.md").exists());
    for name in SERVED {
        let link = done.snapshot.join(name);
        let expected = std::fs::read(fixture().join(name)).unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), expected, "{name}");
        #[cfg(unix)]
        {
            let target = std::fs::read_link(&link).unwrap();
            assert!(target.starts_with("../../blobs"), "{name} -> {target:?}");
        }
    }
    assert!(
        fake.weights_blob().is_file(),
        "the weights' blob is named by its sha256"
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo_dir.join("blobs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty());

    let total: u64 = SERVED
        .iter()
        .map(|n| std::fs::metadata(fixture().join(n)).unwrap().len())
        .sum();
    let last = reports.last().unwrap();
    assert_eq!((last.done, last.total), (total, total));
    assert!(
        reports
            .iter()
            .any(|p| p.file == WEIGHTS && p.file_done < p.file_total)
    );
    assert!(
        reports.windows(2).all(|w| w[0].done <= w[1].done),
        "overall progress only grows"
    );
    assert_eq!(done.fetched_bytes, total);

    let source = ModelSource::HfCache {
        repo: REPO.into(),
        revision: None,
        cache_dir: Some(hub.cache_root.clone()),
    };
    let dir = ModelDir::open(&source).unwrap();
    assert_eq!(dir.weights().unwrap(), done.snapshot.join(WEIGHTS));

    let gets_before = fake
        .seen()
        .iter()
        .filter(|s| s.method == Method::GET)
        .count();
    let (again, _) = fake.fetch(&hub, REPO).unwrap();
    assert_eq!(
        again.fetched_bytes, 0,
        "blobs already cached are not fetched again"
    );
    let gets_after = fake
        .seen()
        .iter()
        .filter(|s| s.method == Method::GET)
        .count();
    assert_eq!(
        gets_after,
        gets_before + 1,
        "only the repository listing is asked again"
    );
}

#[test]
fn a_dropped_connection_is_continued_from_the_part_file_with_a_range_request() {
    let state = HubState::new();
    state.drop_weights_once.store(true, Ordering::SeqCst);
    let fake = FakeHub::start(state);
    let (done, _) = fake.fetch(&fake.hub(None), REPO).unwrap();

    let expected = std::fs::read(fixture().join(WEIGHTS)).unwrap();
    assert_eq!(
        std::fs::read(done.snapshot.join(WEIGHTS)).unwrap(),
        expected
    );
    let weight_gets: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET && s.path.ends_with(WEIGHTS))
        .collect();
    assert_eq!(weight_gets.len(), 2, "{weight_gets:?}");
    assert_eq!(weight_gets[0].range, None);
    let range = weight_gets[1]
        .range
        .as_deref()
        .expect("the retry sent a Range header");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(from > 0 && from <= expected.len() as u64 / 2, "{range}");
    assert!(
        done.fetched_bytes < expected.len() as u64 * 2,
        "the first half was not fetched twice"
    );
}

#[test]
fn a_part_file_left_by_an_earlier_run_is_continued() {
    let fake = FakeHub::start(HubState::new());
    let weights = std::fs::read(fixture().join(WEIGHTS)).unwrap();
    let blob = fake.weights_blob();
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    let part = blob.with_file_name(format!(
        "{}.incomplete",
        blob.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&part, &weights[..1000]).unwrap();

    let (done, _) = fake.fetch(&fake.hub(None), REPO).unwrap();
    assert_eq!(std::fs::read(done.snapshot.join(WEIGHTS)).unwrap(), weights);
    assert!(!part.exists());
    let ranges: Vec<Option<String>> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET && s.path.ends_with(WEIGHTS))
        .map(|s| s.range)
        .collect();
    assert_eq!(ranges, vec![Some("bytes=1000-".to_owned())]);
}

#[test]
fn weights_whose_sha256_differs_from_the_hubs_are_refused() {
    let mut state = HubState::new();
    state.wrong_sha = true;
    let fake = FakeHub::start(state);
    let err = fake.fetch(&fake.hub(None), REPO).unwrap_err();
    assert!(matches!(err, DownloadError::Checksum { .. }), "{err:?}");
    let text = chain(&err);
    assert!(
        text.contains(WEIGHTS) && text.contains(&"f".repeat(64)),
        "{text}"
    );
    let blobs = fake
        .cache
        .path()
        .join("hub/models--tiny-org--tiny-qwen3vl/blobs");
    assert!(!blobs.join("f".repeat(64)).exists());
    assert!(
        !blobs
            .join(format!("{}.incomplete", "f".repeat(64)))
            .exists()
    );
    let snapshot = fake
        .cache
        .path()
        .join("hub/models--tiny-org--tiny-qwen3vl/snapshots")
        .join(COMMIT);
    assert!(!snapshot.join(WEIGHTS).exists());
}

#[test]
fn a_missing_repository_and_a_gated_one_say_what_to_do() {
    let fake = FakeHub::start(HubState::new());
    let err = fake.fetch(&fake.hub(None), "nobody/nothing").unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, DownloadError::NotFound { .. }), "{text}");
    assert!(
        text.contains("404") && text.contains("/api/models/nobody/nothing/revision/main"),
        "{text}"
    );
    assert!(text.contains("RepoNotFound"), "{text}");

    let mut gated = HubState::new();
    gated.token = Some("secret-token".into());
    let fake = FakeHub::start(gated);
    let err = fake.fetch(&fake.hub(None), REPO).unwrap_err();
    let text = chain(&err);
    assert!(
        matches!(err, DownloadError::Unauthorized { status: 401, .. }),
        "{text}"
    );
    assert!(text.contains("HF_TOKEN") && text.contains("401"), "{text}");

    let (done, _) = fake.fetch(&fake.hub(Some("secret-token")), REPO).unwrap();
    assert!(done.snapshot.join(WEIGHTS).is_file());
    assert!(
        fake.seen()
            .iter()
            .skip(1)
            .all(|s| s.auth.as_deref() == Some("Bearer secret-token")),
        "every request of the authorised download carries the token"
    );
}

#[test]
fn a_cancelled_download_stops_and_names_itself() {
    let fake = FakeHub::start(HubState::new());
    let cancel = CancelToken::new();
    cancel.cancel();
    let err = download(
        fake.runtime.handle(),
        &fake.hub(None),
        REPO,
        None,
        &cancel,
        &|_: &DownloadProgress| {},
    )
    .unwrap_err();
    assert!(matches!(err, DownloadError::Cancelled), "{err:?}");
    assert!(fake.seen().is_empty(), "nothing was asked once cancelled");
}

#[test]
fn model_download_and_model_check_from_the_command_line() {
    let fake = FakeHub::start(HubState::new());
    let cache = fake.cache.path().join("hub");
    let spec = format!("hf:{REPO}");
    let out = crate::common::bin()
        .args(["model", "download", &spec])
        .env("HF_ENDPOINT", &fake.endpoint)
        .env("HF_HUB_CACHE", &cache)
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("use it as local:hf:{REPO}")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("100.0%"));

    let out = crate::common::bin()
        .args([
            "model",
            "check",
            &format!("local:{spec}"),
            "--dtype",
            "bf16",
        ])
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "found config",
        "found tokenizer",
        "found template",
        "found weights",
        "memory needed: at most",
        "in bf16 x 1.3",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }

    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture().join("config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let out = crate::common::bin()
        .args(["model", "check"])
        .arg(format!("local:{}", empty.path().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("found config"), "{stdout}");
    assert!(stdout.contains("missing: tokenizer.json"), "{stdout}");
    assert!(stdout.contains("missing: model.safetensors"), "{stdout}");

    let out = crate::common::bin()
        .args(["model", "download", "local:some/folder"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a hub name"));
}

#[test]
fn cancel_stops_a_stalled_transfer_and_the_next_download_continues_it() {
    let state = HubState::new();
    state.stall_weights_once.store(true, Ordering::SeqCst);
    let fake = FakeHub::start(state);
    let hub = fake.hub(None);
    let weights = std::fs::read(fixture().join(WEIGHTS)).unwrap();
    let half = weights.len() as u64 / 2;
    let cancel = CancelToken::new();
    let started = std::time::Instant::now();
    // Once half of the weights has arrived and the hub has gone quiet, Cancel is
    // pressed from another thread, as the app's button does.
    let (half_arrived, wait_half) = std::sync::mpsc::channel::<()>();
    let half_arrived = std::sync::Mutex::new(half_arrived);
    let on_progress = move |p: &DownloadProgress| {
        if p.file == WEIGHTS && p.file_done >= half {
            let _ = half_arrived.lock().unwrap().send(());
        }
    };
    let presser = cancel.clone();
    let button = std::thread::spawn(move || {
        if wait_half.recv().is_ok() {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        presser.cancel();
    });
    let err = download(
        fake.runtime.handle(),
        &hub,
        REPO,
        None,
        &cancel,
        &on_progress,
    )
    .unwrap_err();
    button.join().unwrap();
    assert!(matches!(err, DownloadError::Cancelled), "{err:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "cancel does not wait for the stalled connection"
    );
    let blob = fake.weights_blob();
    let part = blob.with_file_name(format!(
        "{}.incomplete",
        blob.file_name().unwrap().to_string_lossy()
    ));
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        half,
        "what arrived is kept"
    );
    assert!(!blob.exists());

    let (done, _) = fake.fetch(&hub, REPO).unwrap();
    assert_eq!(std::fs::read(done.snapshot.join(WEIGHTS)).unwrap(), weights);
    let last_get = fake
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.method == Method::GET && s.path.ends_with(WEIGHTS))
        .unwrap();
    assert_eq!(last_get.range, Some(format!("bytes={half}-")));
}

#[test]
fn a_renamed_repository_is_followed_to_its_new_name() {
    let fake = FakeHub::start(HubState::new());
    let hub = fake.hub(None);
    let (done, _) = fake.fetch(&hub, OLD_REPO).unwrap();
    // Stored under the name asked for, as `huggingface_hub` stores it.
    assert!(done.snapshot.starts_with(hub.repo_folder(OLD_REPO)));
    let weights = std::fs::read(fixture().join(WEIGHTS)).unwrap();
    assert_eq!(std::fs::read(done.snapshot.join(WEIGHTS)).unwrap(), weights);
    assert!(
        fake.seen()
            .iter()
            .any(|s| s.method == Method::HEAD && s.path.starts_with(&format!("/{OLD_REPO}/")))
    );
}
