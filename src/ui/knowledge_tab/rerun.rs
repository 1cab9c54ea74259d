//! Measure an edit: ask again, as a new run, the questions of an earlier run whose
//! prompts read the selected category, with the saved knowledge and the earlier
//! run's other settings, then show the accuracy per subtask before and after.
//!
//! The run goes on in the background like any batch run (status bar, Stop), and
//! the result stays on screen until another one replaces it.

use std::path::PathBuf;

use eframe::egui;

use super::{KnowledgeEnv, KnowledgeState, Selection};
use crate::jobs::Progress;
use crate::runs::catalog::{self, RunRow, run_folder_name, runs_dir};
use crate::runs::rerun::{EditedCategory, RerunEffect, RerunPlan, measure_effect, plan_rerun};
use crate::runs::run_folder::RunFolder;
use crate::score::{AVERAGE, ScoreOptions};
use crate::ui::Command;
use crate::ui::batch::{LiveRun, SharedRun, start_live_run};
use crate::ui::jobs::Job;
use crate::ui::status::Activity;

/// What a plan was made from: another baseline, category or saved version plans again.
#[derive(Debug, Clone, PartialEq)]
struct PlanKey {
    baseline: PathBuf,
    dataset: String,
    category: String,
    /// The saved knowledge's content hash.
    version: String,
}

/// The finished comparison.
pub struct Measured {
    pub effect: RerunEffect,
    pub rerun_dir: PathBuf,
    pub baseline_name: String,
    pub category: String,
}

struct Live {
    shared: SharedRun,
    run: LiveRun,
    baseline: PathBuf,
    baseline_name: String,
    category: String,
}

#[derive(Default)]
pub struct RerunView {
    runs: Option<Vec<RunRow>>,
    runs_job: Option<Job<Vec<RunRow>>>,
    runs_error: Option<String>,
    /// List the runs again; the old list stays on screen meanwhile.
    runs_stale: bool,
    /// The run whose questions are asked again.
    pub baseline: Option<PathBuf>,
    plan_job: Option<(PlanKey, Job<RerunPlan>)>,
    plan: Option<(PlanKey, Result<RerunPlan, String>)>,
    live: Option<Live>,
    measure_job: Option<Job<Measured>>,
    /// The last measurement (kept while a new one runs, so nothing flashes empty).
    pub result: Option<Result<Measured, String>>,
    start_error: Option<String>,
}

impl RerunView {
    pub fn busy(&self) -> bool {
        self.runs_job.is_some()
            || self.plan_job.is_some()
            || self.measure_job.is_some()
            || self.running()
    }

    /// A re-run is asking questions.
    pub fn running(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.run.is_running())
    }

    /// The status bar's row while a re-run goes: progress and a Stop that keeps
    /// what was answered.
    pub fn activity(&self) -> Option<Activity> {
        let live = self.live.as_ref().filter(|l| l.run.is_running())?;
        let p = live.shared.lock().progress.clone();
        Some(Activity {
            label: format!("re-run {} questions", live.category),
            progress: (p.total > 0).then_some(Progress {
                stage: "answered",
                done: p.done,
                total: p.total,
            }),
            cancel: Some(live.run.stop_token()),
        })
    }
}

pub fn poll(state: &mut KnowledgeState) {
    let view = &mut state.rerun;
    if let Some(result) = view.runs_job.as_mut().and_then(Job::take) {
        view.runs_job = None;
        match result {
            Ok(mut rows) => {
                // Only runs with answers can be compared against (listed newest first).
                rows.retain(|r| r.error.is_none() && r.answered > 0);
                if view
                    .baseline
                    .as_ref()
                    .is_none_or(|b| !rows.iter().any(|r| &r.dir == b))
                {
                    view.baseline = rows.first().map(|r| r.dir.clone());
                }
                view.runs = Some(rows);
                view.runs_error = None;
            }
            Err(e) => {
                view.runs = Some(Vec::new());
                view.runs_error = Some(e);
            }
        }
    }
    if let Some((key, job)) = &mut view.plan_job
        && let Some(result) = job.take()
    {
        let key = key.clone();
        view.plan_job = None;
        view.plan = Some((key, result));
    }
    if let Some(live) = &mut view.live
        && live.run.poll()
    {
        let baseline = live.baseline.clone();
        let rerun = live.run.dir.clone();
        let baseline_name = live.baseline_name.clone();
        let category = live.category.clone();
        view.live = None;
        view.runs_stale = true;
        view.measure_job = Some(Job::spawn("measure the edit", move || {
            let before = RunFolder::open(&baseline)?;
            let after = RunFolder::open(&rerun)?;
            Ok(Measured {
                effect: measure_effect(&before, &after, ScoreOptions::default()),
                rerun_dir: rerun,
                baseline_name,
                category,
            })
        }));
    }
    if let Some(result) = view.measure_job.as_mut().and_then(Job::take) {
        view.measure_job = None;
        view.result = Some(result);
    }
}

/// The section under the impact table: pick a run, see what a re-run would ask,
/// start it, watch it, read the change.
pub fn ui(state: &mut KnowledgeState, ui: &mut egui::Ui, sel: &Selection, env: &KnowledgeEnv<'_>) {
    ui.add_space(6.0);
    ui.strong("Measure the edit on a run");
    let Some(doc) = &state.doc else { return };
    let view = &mut state.rerun;
    // Listing opens every run's journal: only when this section is on screen.
    if (view.runs.is_none() || view.runs_stale) && view.runs_job.is_none() {
        view.runs_stale = false;
        let dir = runs_dir(env.workspace);
        view.runs_job = Some(Job::spawn("list runs", move || {
            Ok(catalog::list(&dir, ScoreOptions::default())?)
        }));
    }
    let Some(runs) = &view.runs else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Reading the runs...");
        });
        return;
    };
    if let Some(e) = &view.runs_error {
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!("Cannot list the runs: {e}"),
        );
    }
    if runs.is_empty() {
        ui.label(
            "No run with answers yet. Start one in Batch (knowledge mode category, options or llm), then come back to measure edits on it.",
        );
        return;
    }
    let mut refresh = false;
    ui.horizontal(|ui| {
        let name_of = |p: &PathBuf| {
            runs.iter()
                .find(|r| &r.dir == p)
                .map_or_else(|| p.display().to_string(), run_label)
        };
        let current = view.baseline.as_ref().map_or_else(String::new, name_of);
        let mut chosen = view.baseline.clone();
        egui::ComboBox::from_label("Baseline run")
            .selected_text(current)
            .width(420.0)
            .show_ui(ui, |ui| {
                for r in runs {
                    ui.selectable_value(&mut chosen, Some(r.dir.clone()), run_label(r));
                }
            });
        if chosen != view.baseline {
            view.baseline = chosen;
        }
        if ui
            .button("Refresh")
            .on_hover_text("List the runs folder again")
            .clicked()
        {
            refresh = true;
        }
    });
    if refresh {
        view.runs_stale = true;
    }
    let Some(baseline) = view.baseline.clone() else {
        return;
    };
    let key = PlanKey {
        baseline: baseline.clone(),
        dataset: sel.dataset.clone(),
        category: sel.category.clone(),
        version: doc.saved_content_hash.clone(),
    };
    let planned = view.plan.as_ref().is_some_and(|(k, _)| *k == key);
    let planning = view.plan_job.as_ref().is_some_and(|(k, _)| *k == key);
    if !planned && !planning {
        let kb = doc.saved.clone();
        let knowledge_path = doc.path.clone();
        let endpoints = env.endpoints.to_vec();
        let out = runs_dir(env.workspace);
        let k = key.clone();
        view.plan_job = Some((
            key.clone(),
            Job::spawn("plan the re-run", move || {
                let folder = RunFolder::open(&k.baseline)?;
                let edited = EditedCategory {
                    knowledge: &kb,
                    knowledge_path: &knowledge_path,
                    dataset: &k.dataset,
                    category: &k.category,
                };
                Ok(plan_rerun(&folder, edited, &endpoints, out)?)
            }),
        ));
    }
    // The last plan stays on screen while the next one is worked out.
    let Some((shown_key, plan)) = &view.plan else {
        ui.spinner();
        return;
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
            return;
        }
    };
    let current = *shown_key == key;
    ui.label(plan_summary(plan, &sel.category));
    if let Some(k) = &plan.baseline_knowledge {
        if plan.same_knowledge(&doc.saved) {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "The saved knowledge is the version this run read: a re-run now shows only how much the model's answers vary.",
            );
        } else if plan.reads_other_file {
            ui.label(
                egui::RichText::new(format!(
                    "The run read {}; the re-run reads {}. Only this category's text reaches these questions.",
                    k.path.display(),
                    doc.path.display()
                ))
                .weak(),
            );
        }
    }
    let running = view.live.as_ref().is_some_and(|l| l.run.is_running());
    let blocker = if doc.dirty {
        Some("Save first: the re-run reads the knowledge file on disk and records its version.")
    } else if !current {
        Some("Working out the questions...")
    } else if running {
        None
    } else if plan.spec.is_none() {
        Some("Nothing to re-run: no answered question of this run reads this category's knowledge.")
    } else {
        None
    };
    if let Some(live) = &mut view.live
        && live.run.is_running()
    {
        let p = live.shared.lock().progress.clone();
        ui.horizontal(|ui| {
            let fraction = if p.total == 0 {
                0.0
            } else {
                p.done as f32 / p.total as f32
            };
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(240.0)
                    .text(format!("{} of {} answered", p.done, p.total)),
            );
            if p.errors > 0 {
                ui.colored_label(ui.visuals().warn_fg_color, format!("{} errors", p.errors));
            }
            if ui
                .button("Stop re-run")
                .on_hover_text("Stop asking; the answers so far are kept and measured")
                .clicked()
            {
                live.run.request_stop(false);
            }
        });
    } else {
        ui.horizontal(|ui| {
            let label = format!("Re-run {} questions with the saved knowledge", plan.indices.len());
            let clicked = ui
                .add_enabled(blocker.is_none(), egui::Button::new(label))
                .on_hover_text(
                    "A new run under runs/ with the baseline's settings; only the knowledge file differs",
                )
                .clicked();
            if let Some(why) = blocker {
                ui.label(egui::RichText::new(why).weak());
            }
            if clicked && let Some(spec) = plan.spec.clone() {
                view.start_error = None;
                let mut spec = spec;
                spec.out = runs_dir(env.workspace).join(run_folder_name(
                    &crate::util::time::now_seconds(),
                    &format!("rerun-{}", sel.category),
                ));
                match start_live_run(spec, ScoreOptions::default(), Some(ui.ctx().clone())) {
                    Ok((shared, run)) => {
                        view.live = Some(Live {
                            shared,
                            run,
                            baseline: baseline.clone(),
                            baseline_name: plan.baseline_name.clone(),
                            category: sel.category.clone(),
                        });
                    }
                    Err(e) => view.start_error = Some(format!("Cannot start the re-run: {}", crate::util::error::chain(e.as_ref()))),
                }
            }
        });
    }
    if let Some(e) = &view.start_error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
    if view.measure_job.is_some() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Scoring both runs...");
        });
    }
    match &view.result {
        Some(Ok(m)) => effect_ui(ui, m, &mut state.commands),
        Some(Err(e)) => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Cannot measure the re-run: {e}"),
            );
        }
        None => {}
    }
}

fn run_label(r: &RunRow) -> String {
    let acc = r
        .accuracy
        .map_or_else(|| "no score".to_string(), |a| format!("{a:.1}%"));
    let note = if r.note().is_empty() {
        String::new()
    } else {
        format!(" ({})", r.note())
    };
    format!("{}{note}: {} answered, {acc}", r.name, r.answered)
}

fn plan_summary(plan: &RerunPlan, category: &str) -> String {
    let mut text = if plan.indices.is_empty() {
        format!(
            "None of the answered questions of `{}` about {category} reads this category's knowledge",
            plan.baseline_name
        )
    } else {
        let per_type: Vec<String> = plan
            .per_type
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        format!(
            "{} answered questions of `{}` about {category} read this category's knowledge ({})",
            plan.indices.len(),
            plan.baseline_name,
            per_type.join(", ")
        )
    };
    if plan.unreached > 0 {
        text.push_str(&format!(
            "; {} others do not (their type skips the Knowledge Guide, or the run read the condensed file)",
            plan.unreached
        ));
    }
    if plan.errors_left_out > 0 {
        text.push_str(&format!(
            "; {} ended in errors in that run and are left out",
            plan.errors_left_out
        ));
    }
    text.push('.');
    text
}

fn effect_ui(ui: &mut egui::Ui, m: &Measured, commands: &mut Vec<Command>) {
    let e = &m.effect;
    ui.add_space(4.0);
    ui.label(format!(
        "Effect on {} questions about {} (`{}` before, the re-run after):",
        e.comparison.common, m.category, m.baseline_name
    ));
    egui::Grid::new("rerun_effect")
        .striped(true)
        .show(ui, |ui| {
            ui.strong("Subtask");
            ui.strong("Questions");
            ui.strong("Before");
            ui.strong("After");
            ui.strong("Change");
            ui.end_row();
            for s in &e.subtasks {
                let name = if s.subtask == AVERAGE {
                    egui::RichText::new("Average").strong()
                } else {
                    egui::RichText::new(&s.subtask)
                };
                ui.label(name);
                ui.label(s.questions.to_string());
                ui.label(percent(s.before));
                ui.label(percent(s.after));
                match s.delta() {
                    Some(d) if d.abs() >= 0.05 => {
                        let color = if d > 0.0 {
                            egui::Color32::from_rgb(40, 150, 60)
                        } else {
                            ui.visuals().error_fg_color
                        };
                        ui.colored_label(color, format!("{d:+.1} points"));
                    }
                    Some(_) => {
                        ui.label("no change");
                    }
                    None => {
                        ui.label("-");
                    }
                }
                ui.end_row();
            }
        });
    ui.horizontal_wrapped(|ui| {
        ui.label(format!(
            "{} answers became right, {} became wrong.",
            e.comparison.better, e.comparison.worse
        ));
        if e.unanswered > 0 {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("{} questions of the re-run have no answer (stopped, or errors) and are left out.", e.unanswered),
            );
        }
        let name = m
            .rerun_dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if ui
            .button(format!("Open {name} in Batch"))
            .on_hover_text("Every answer of the re-run with its expert traces")
            .clicked()
        {
            commands.push(Command::OpenRun(m.rerun_dir.clone()));
        }
    });
}

fn percent(v: Option<f64>) -> String {
    v.filter(|v| !v.is_nan())
        .map_or_else(|| "-".to_string(), |v| format!("{v:.1}%"))
}
