//! Finding the current image's references: the job that searches the memory the
//! way the Reference Extractor does, and the strip that shows what it found.

use std::path::{Path, PathBuf};
use std::time::Instant;

use eframe::egui;

use super::{InspectEnv, InspectState};
use crate::echo::plan::ScopeMode;
use crate::echo::query::Query;
use crate::echo::reference::{Candidate, ReferenceSource};
use crate::ui::LoadedReference;
use crate::ui::compare::ReferenceImage;
use crate::ui::jobs::Job;

/// The references found for the current image.
#[derive(Debug, Clone)]
pub struct Retrieval {
    pub image: PathBuf,
    pub candidates: Vec<Candidate>,
    pub notes: Vec<String>,
    pub embedder: String,
    /// `global`, `category washer`, or `global (category unknown)`.
    pub scope: String,
    pub ms: u64,
    target: RetrievalTarget,
}

impl Retrieval {
    /// The caption under a reference: file, score, embedder, scope.
    pub fn caption(&self, i: usize) -> String {
        let Some(c) = self.candidates.get(i) else {
            return String::new();
        };
        let score = c
            .score
            .map(|s| format!("cosine {s:.3}"))
            .unwrap_or_default();
        let rerank = c
            .rerank_score
            .map(|s| format!(", rerank {s:.3}"))
            .unwrap_or_default();
        format!(
            "{} · {score}{rerank} · {} · {} scope",
            c.rel_path, self.embedder, self.scope
        )
    }
}

/// What a retrieval was asked for; a change in any part redoes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RetrievalTarget {
    image: PathBuf,
    generation: u64,
    scope: ScopeMode,
    category: Option<String>,
    k: usize,
}

impl InspectState {
    pub(super) fn poll_retrieval(&mut self, env: &InspectEnv<'_>) {
        if let Some(result) = self.retrieval_job.as_mut().and_then(Job::take) {
            self.retrieval_job = None;
            match result {
                Ok(r) if Some(&r.target) == self.retrieval_target.as_ref() => {
                    self.chosen_reference = 0;
                    self.compare
                        .set_reference(r.candidates.first().map(|c| ReferenceImage {
                            path: c.path.clone(),
                            caption: r.caption(0),
                        }));
                    self.retrieval = Some(r);
                    self.retrieval_error = None;
                }
                Ok(_) => {}
                Err(e) => self.retrieval_error = Some(e),
            }
        }
        let (Some(cur), Some(reference)) = (&self.current, env.reference) else {
            return;
        };
        let query = cur.query();
        let target = RetrievalTarget {
            image: cur.path.clone(),
            generation: env.reference_generation,
            scope: env.settings.pipeline.scope,
            category: query.category.clone(),
            k: env.settings.reference.top_k.max(1),
        };
        if self.retrieval_target.as_ref() == Some(&target) {
            return;
        }
        self.retrieval_target = Some(target.clone());
        let reference = reference.clone();
        // A newer request replaces the old job; its result is simply dropped.
        self.retrieval_job = Some(Job::spawn("find reference", move || {
            retrieve(reference, query, target)
        }));
    }

    pub(super) fn reference_strip(&mut self, ui: &mut egui::Ui, env: &InspectEnv<'_>) {
        ui.add_space(4.0);
        if env.reference.is_none() {
            if let Some(e) = env.reference_error {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Reference memory failed: {e} (fix it in Settings)"),
                );
                return;
            }
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Reference memory is loading… (see Settings for the memory in use)");
            });
            return;
        }
        if let Some(e) = &self.retrieval_error {
            ui.colored_label(ui.visuals().error_fg_color, format!("No reference: {e}"));
        }
        let loading = self.retrieval_job.is_some();
        let Some(r) = &self.retrieval else {
            if loading {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Finding the most similar defect-free image…");
                });
            }
            return;
        };
        ui.horizontal_wrapped(|ui| {
            ui.strong("Reference:");
            ui.label(r.caption(self.chosen_reference));
            if loading {
                ui.spinner();
            }
        });
        let mut pick = None;
        egui::ScrollArea::horizontal()
            .id_salt("topk")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.weak(format!("Top {}:", r.candidates.len()));
                    for (i, c) in r.candidates.iter().enumerate() {
                        let name = Path::new(&c.rel_path)
                            .iter()
                            .rev()
                            .take(3)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<PathBuf>();
                        let score = c.score.map(|s| format!("{s:.3}")).unwrap_or_default();
                        let text = format!("{}. {}  {score}", i + 1, name.display());
                        if ui
                            .selectable_label(i == self.chosen_reference, text)
                            .on_hover_text(r.caption(i))
                            .clicked()
                        {
                            pick = Some(i);
                        }
                    }
                });
            });
        for note in &r.notes {
            ui.weak(note);
        }
        ui.weak(format!(
            "Found in {} ms. The pipeline sends its own best match to the model; these buttons only change the view.",
            r.ms
        ));
        if let Some(i) = pick
            && let Some(c) = r.candidates.get(i)
        {
            self.compare.set_reference(Some(ReferenceImage {
                path: c.path.clone(),
                caption: r.caption(i),
            }));
            self.chosen_reference = i;
        }
    }
}

/// Decodes and embeds the query with the memory's embedder and searches the memory,
/// exactly as the pipeline's Reference Extractor does (same code, same scope rules).
fn retrieve(
    reference: LoadedReference,
    mut query: Query,
    target: RetrievalTarget,
) -> anyhow::Result<Retrieval> {
    let start = Instant::now();
    let (scope, scope_text) = match (target.scope, &target.category) {
        (ScopeMode::Category, Some(c)) => (ScopeMode::Category, format!("category {c}")),
        (ScopeMode::Category, None) => (ScopeMode::Global, "global (category unknown)".to_string()),
        (ScopeMode::Global, _) => (ScopeMode::Global, "global".to_string()),
    };
    query.category = target.category.clone();
    let source = ReferenceSource::Memory {
        memory: reference.memory.clone(),
        embedder: reference.embedder.clone(),
        scope,
        k: target.k,
    };
    let runtime = crate::ui::services::runtime().map_err(anyhow::Error::msg)?;
    let (_, found) = runtime
        .block_on(crate::echo::reference::find(&source, &query, 1))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Retrieval {
        image: target.image.clone(),
        candidates: found.candidates,
        notes: found.notes,
        embedder: reference.memory.embedder.clone(),
        scope: scope_text,
        ms: start.elapsed().as_millis() as u64,
        target,
    })
}
