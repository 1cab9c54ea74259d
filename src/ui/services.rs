//! The app's shared background services: the reference memory every view retrieves
//! from, and the capability probes of the configured endpoints. Both run their work
//! in [`TrackedJob`]s; the views only read their state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;

use super::LoadedReference;
use super::status::{Activity, SharedProgress, TrackedJob};
use crate::config::Settings;
use crate::jobs::CancelToken;
use crate::memory::{BuildOptions, ReferenceMemory, build_memory, collect_images};
use crate::mllm::{EndpointConfig, MllmClient, ProbeReport};
use crate::vision::ImageEmbedder;
use crate::vision::spec::EmbedderSpec;

/// Where the reference memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferencePlan {
    /// A memory folder written by `memory build` or by the Settings tab; its own
    /// recorded embedder is used, `embedder` only when it records none.
    Load { folder: PathBuf, embedder: String },
    /// Embed the defect-free images under `root` into a memory held in RAM.
    Build { root: PathBuf, embedder: String },
}

impl ReferencePlan {
    /// What the settings ask for: their memory folder, else a build from the chosen
    /// images folder (by default the dataset root).
    pub fn from_settings(settings: &Settings) -> Self {
        let embedder = settings.reference.embedder.clone();
        match &settings.reference.memory {
            Some(folder) => ReferencePlan::Load {
                folder: folder.clone(),
                embedder,
            },
            None => ReferencePlan::Build {
                root: settings.reference_build_root(),
                embedder,
            },
        }
    }

    /// For people: "memory folder X" or "built from X".
    pub fn describe(&self) -> String {
        match self {
            ReferencePlan::Load { folder, .. } => format!("memory folder {}", folder.display()),
            ReferencePlan::Build { root, .. } => format!("built from {}", root.display()),
        }
    }
}

/// A finished load or build.
pub struct ReferenceOutcome {
    pub reference: LoadedReference,
    /// What it now is (a build saved to a folder becomes a `Load` of that folder).
    pub plan: ReferencePlan,
    /// What the build did, for people ("24 embedded, 0 from the cache").
    pub note: String,
}

/// Loads or builds the reference memory in the background, one at a time.
#[derive(Default)]
pub struct ReferenceService {
    /// What the memory in use (or the one being made) comes from.
    pub plan: Option<ReferencePlan>,
    job: Option<TrackedJob<ReferenceOutcome>>,
    /// Why the last load or build failed; the previous memory stays in use.
    pub error: Option<String>,
    /// What the last successful build or load did.
    pub note: Option<String>,
}

impl ReferenceService {
    /// Starts making the memory `plan` describes, replacing any job under way.
    /// `save_to` (builds only) also writes the new memory to that folder.
    pub fn start(&mut self, plan: ReferencePlan, workspace: &Path, save_to: Option<PathBuf>) {
        if let Some(old) = self.job.take() {
            old.cancel();
        }
        self.error = None;
        let cache_dir = crate::workspace::embedding_cache_dir(workspace);
        let label = match (&plan, &save_to) {
            (ReferencePlan::Load { .. }, _) => "load reference memory".to_string(),
            (ReferencePlan::Build { .. }, None) => "build reference memory".to_string(),
            (ReferencePlan::Build { .. }, Some(dir)) => {
                format!("build and save reference memory to {}", dir.display())
            }
        };
        let job_plan = plan.clone();
        self.job = Some(TrackedJob::spawn(
            "reference memory",
            label,
            move |progress, cancel| make_reference(job_plan, &cache_dir, save_to, progress, cancel),
        ));
        self.plan = Some(plan);
    }

    /// Starts over when the settings ask for another memory than the one in use.
    pub fn follow_settings(&mut self, settings: &Settings, workspace: &Path) {
        let plan = ReferencePlan::from_settings(settings);
        if self.plan.as_ref() != Some(&plan) {
            self.start(plan, workspace, None);
        }
    }

    pub fn cancel(&self) {
        if let Some(job) = &self.job {
            job.cancel();
        }
    }

    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub fn activity(&self) -> Option<Activity> {
        self.job.as_ref().map(TrackedJob::activity)
    }

    pub fn progress(&self) -> Option<crate::jobs::Progress> {
        self.job.as_ref().and_then(TrackedJob::progress)
    }

    /// The new memory, once, when a job has finished well.
    pub fn poll(&mut self) -> Option<LoadedReference> {
        let result = self.job.as_mut()?.take()?;
        self.job = None;
        match result {
            Ok(outcome) => {
                self.plan = Some(outcome.plan);
                self.note = Some(outcome.note);
                self.error = None;
                Some(outcome.reference)
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

fn load_embedder(spec: &str) -> anyhow::Result<Arc<dyn ImageEmbedder>> {
    let spec: EmbedderSpec = spec.parse()?;
    Ok(Arc::from(spec.load()?))
}

fn make_reference(
    plan: ReferencePlan,
    cache_dir: &Path,
    save_to: Option<PathBuf>,
    progress: &SharedProgress,
    cancel: &CancelToken,
) -> anyhow::Result<ReferenceOutcome> {
    match plan {
        ReferencePlan::Load { folder, embedder } => {
            let memory = ReferenceMemory::load(&folder)?;
            // The memory knows how it was embedded; the setting is the fallback for
            // memories that do not say (or whose weights have moved).
            let model = match load_embedder(&memory.embedder_spec) {
                Ok(e) if !memory.embedder_spec.is_empty() => e,
                _ => load_embedder(&embedder).with_context(|| {
                    format!(
                        "{} does not name a usable embedder (`{}`), and the one in Settings failed",
                        folder.display(),
                        memory.embedder_spec
                    )
                })?,
            };
            memory.check_query(&model.id(), model.dim())?;
            let note = format!(
                "loaded {} images embedded with {}",
                memory.len(),
                memory.embedder
            );
            Ok(ReferenceOutcome {
                reference: LoadedReference {
                    memory: Arc::new(memory),
                    embedder: model,
                    origin: format!("memory folder {}", folder.display()),
                },
                plan: ReferencePlan::Load { folder, embedder },
                note,
            })
        }
        ReferencePlan::Build { root, embedder } => {
            if let Some(dir) = &save_to {
                // Refuse a folder that is not ours to replace before embedding anything.
                ReferenceMemory::check_destination(dir)?;
            }
            let spec: EmbedderSpec = embedder.parse()?;
            let images = collect_images(&root, None)?;
            let model = load_embedder(&embedder)?;
            let options = BuildOptions {
                cache_dir: Some(cache_dir.to_path_buf()),
                thumbs: spec.wants_thumbs(),
                ..BuildOptions::default()
            };
            let (memory, report) = build_memory(
                &spec.to_string(),
                &root,
                &images,
                model.as_ref(),
                &options,
                progress,
                cancel,
            )?;
            let mut note = format!(
                "{} images: {} embedded, {} from the cache",
                memory.len(),
                report.embedded,
                report.from_cache
            );
            if !report.skipped.is_empty() {
                let (path, why) = &report.skipped[0];
                note.push_str(&format!(
                    "; {} skipped (first: {path}: {why})",
                    report.skipped.len()
                ));
            }
            let (origin, plan) = match save_to {
                Some(dir) => {
                    memory
                        .save(&dir)
                        .with_context(|| format!("saving the memory to {}", dir.display()))?;
                    note.push_str(&format!("; saved to {}", dir.display()));
                    (
                        format!("memory folder {}", dir.display()),
                        ReferencePlan::Load {
                            folder: dir,
                            embedder: embedder.clone(),
                        },
                    )
                }
                None => (
                    format!("built from {}", root.display()),
                    ReferencePlan::Build {
                        root: root.clone(),
                        embedder: embedder.clone(),
                    },
                ),
            };
            Ok(ReferenceOutcome {
                reference: LoadedReference {
                    memory: Arc::new(memory),
                    embedder: model,
                    origin,
                },
                plan,
                note,
            })
        }
    }
}

/// What is known about one endpoint's capabilities.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeState {
    Untested,
    Probing,
    Done(ProbeReport),
}

/// Capability probes ("Test") of endpoints, remembered per connection setting so
/// that the status bar can say whether the active endpoint works.
#[derive(Default)]
pub struct EndpointProbes {
    results: Vec<(EndpointConfig, ProbeReport)>,
    jobs: Vec<(EndpointConfig, TrackedJob<ProbeReport>)>,
}

impl EndpointProbes {
    /// Probes `cfg` in the background (once at a time per endpoint setting).
    pub fn start(&mut self, cfg: EndpointConfig) {
        let key = probe_key(&cfg);
        if self.jobs.iter().any(|(k, _)| *k == key) {
            return;
        }
        let label = format!("test endpoint {}", cfg.name);
        let job = TrackedJob::spawn("probe endpoint", label, move |_, cancel| {
            Ok(run_probe(cfg, cancel))
        });
        self.jobs.push((key, job));
    }

    pub fn state(&self, cfg: &EndpointConfig) -> ProbeState {
        let key = probe_key(cfg);
        if self.jobs.iter().any(|(k, _)| *k == key) {
            return ProbeState::Probing;
        }
        match self.results.iter().find(|(k, _)| *k == key) {
            Some((_, report)) => ProbeState::Done(report.clone()),
            None => ProbeState::Untested,
        }
    }

    pub fn poll(&mut self) {
        let mut i = 0;
        while i < self.jobs.len() {
            match self.jobs[i].1.take() {
                Some(result) => {
                    let (key, _) = self.jobs.remove(i);
                    let report = result.unwrap_or_else(failed_report);
                    self.results.retain(|(k, _)| *k != key);
                    self.results.push((key, report));
                }
                None => i += 1,
            }
        }
    }

    pub fn busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    pub fn activities(&self) -> Vec<Activity> {
        self.jobs.iter().map(|(_, j)| j.activity()).collect()
    }
}

/// The settings that decide whether a probe's answer still holds (not the label,
/// nor how many requests a run may keep open).
fn probe_key(cfg: &EndpointConfig) -> EndpointConfig {
    EndpointConfig {
        name: String::new(),
        max_in_flight: 1,
        max_retries: 0,
        retry_base_ms: 0,
        price_prompt_per_million: None,
        price_completion_per_million: None,
        ..cfg.clone()
    }
}

fn failed_report(message: String) -> ProbeReport {
    ProbeReport {
        ok: false,
        models: Vec::new(),
        model_listed: false,
        two_images_ok: false,
        latency_ms: 0,
        message,
        reply: None,
        usage: None,
    }
}

/// Whether the environment variable that should hold an API key is set (never
/// its value).
pub fn api_key_is_set(var: &str) -> bool {
    std::env::var(var.trim()).is_ok_and(|v| !v.trim().is_empty())
}

/// The app's one tokio runtime, started on first use and kept while the app runs.
/// Background jobs run on threads of their own and block on its handle (never from
/// a task on it); clients made on it share its timers and connections.
pub fn runtime() -> Result<tokio::runtime::Handle, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("app-async")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))
        })
        .as_ref()
        .map(|r| r.handle().clone())
        .map_err(Clone::clone)
}

/// Runs `fut` on the app's runtime, giving up when `cancel` is set.
fn block_on_cancellable<F: std::future::Future>(
    fut: F,
    cancel: &CancelToken,
) -> anyhow::Result<F::Output> {
    let runtime = runtime().map_err(anyhow::Error::msg)?;
    runtime.block_on(async {
        tokio::select! {
            out = fut => Ok(out),
            _ = async {
                while !cancel.is_cancelled() {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            } => Err(anyhow::anyhow!("cancelled")),
        }
    })
}

/// The capability probe of `cfg`, with one attempt per request so a dead server
/// is reported at once; every failure becomes a report with its reason.
pub fn run_probe(cfg: EndpointConfig, cancel: &CancelToken) -> ProbeReport {
    let client = match MllmClient::new(EndpointConfig {
        max_retries: 0,
        ..cfg
    }) {
        Ok(c) => c,
        Err(e) => return failed_report(e.to_string()),
    };
    match block_on_cancellable(client.probe(), cancel) {
        Ok(report) => report,
        Err(e) => failed_report(format!("the test was {e}")),
    }
}

/// The model names the server at `cfg.base_url` lists.
pub fn list_models(cfg: EndpointConfig, cancel: &CancelToken) -> anyhow::Result<Vec<String>> {
    let client = MllmClient::new(EndpointConfig {
        max_retries: 0,
        // The model is irrelevant for listing, but the client insists on one.
        model: if cfg.model.trim().is_empty() {
            "any".into()
        } else {
            cfg.model.clone()
        },
        ..cfg
    })?;
    Ok(block_on_cancellable(client.models(), cancel)??)
}

/// `<workspace>/memories/<name>`, for a name that is one plain folder name.
pub fn memory_folder(workspace: &Path, name: &str) -> Result<PathBuf, String> {
    let name = name.trim();
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(format!(
            "`{name}` is not a usable name: use letters, digits, - _ and . (not first)"
        ));
    }
    Ok(workspace.join("memories").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_saved_over_a_users_folder_is_refused_before_embedding() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("my-notes");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("notes.md"), "mine").unwrap();
        let cache = dir.path().join("cache");
        let plan = ReferencePlan::Build {
            root: Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/sample"),
            embedder: "descriptor".into(),
        };
        let result = make_reference(
            plan,
            &cache,
            Some(folder.clone()),
            &SharedProgress::default(),
            &CancelToken::new(),
        );
        let err = format!("{:#}", result.err().expect("the folder is not a memory"));
        assert!(
            err.contains("refusing to write a memory to") && err.contains("`notes.md`"),
            "{err}"
        );
        assert!(!cache.exists(), "nothing was embedded");
        assert_eq!(
            std::fs::read_to_string(folder.join("notes.md")).unwrap(),
            "mine"
        );
    }
}
