//! Model endpoints: the list, the editor of one endpoint, its Test and model list.

use eframe::egui;

use crate::mllm::EndpointConfig;
use crate::ui::Command;
use crate::ui::services::{self, ProbeState};
use crate::ui::status::TrackedJob;

use super::widgets::*;
use super::{SettingsEnv, SettingsState};

impl SettingsState {
    pub(super) fn endpoints_section(
        &mut self,
        ui: &mut egui::Ui,
        env: &SettingsEnv<'_>,
        commands: &mut Vec<Command>,
    ) {
        section(
            ui,
            "Model endpoints",
            "The OpenAI-compatible server that answers the questions: vLLM, Ollama, llama.cpp, \
             LM Studio or a hosted API. Inspect asks the active one; batch runs can use several.",
            |ui| {
                ui.horizontal_wrapped(|ui| {
                    for (i, e) in self.draft.endpoints.iter().enumerate() {
                        let mut text = e.name.clone();
                        if text.trim().is_empty() {
                            text = format!("endpoint {}", i + 1);
                        }
                        if i == self.draft.active_endpoint {
                            text.push_str(" (active)");
                        }
                        if ui
                            .selectable_label(i == self.selected_endpoint, text)
                            .clicked()
                        {
                            self.selected_endpoint = i;
                        }
                    }
                    ui.separator();
                    if ui.button("Add endpoint").clicked() {
                        let n = self.draft.endpoints.len() + 1;
                        self.draft.endpoints.push(EndpointConfig {
                            name: format!("endpoint {n}"),
                            ..EndpointConfig::default()
                        });
                        self.selected_endpoint = self.draft.endpoints.len() - 1;
                    }
                    let can_remove = !self.draft.endpoints.is_empty();
                    if ui
                        .add_enabled(can_remove, egui::Button::new("Remove endpoint"))
                        .on_hover_text("Remove the endpoint shown below")
                        .clicked()
                    {
                        let i = self.selected_endpoint;
                        self.draft.endpoints.remove(i);
                        let active = &mut self.draft.active_endpoint;
                        if *active > i || *active >= self.draft.endpoints.len() {
                            *active = active.saturating_sub(1);
                        }
                        self.selected_endpoint = i.saturating_sub(1);
                    }
                });
                if self.draft.endpoints.is_empty() {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        "No endpoint: Inspect and Batch cannot ask a model until you add one.",
                    );
                    return;
                }
                ui.add_space(4.0);
                self.endpoint_editor(ui, env, commands);
            },
        );
    }

    pub(super) fn endpoint_editor(
        &mut self,
        ui: &mut egui::Ui,
        env: &SettingsEnv<'_>,
        commands: &mut Vec<Command>,
    ) {
        let i = self
            .selected_endpoint
            .min(self.draft.endpoints.len().saturating_sub(1));
        self.selected_endpoint = i;
        let models_key = {
            let e = &self.draft.endpoints[i];
            (e.base_url.trim().to_string(), e.api_key_env.clone())
        };
        let probe = env.probes.state(&self.draft.endpoints[i]);
        let mut known_models: Vec<String> = Vec::new();
        let mut models_error = None;
        if let Some((_, r)) = self.served_models.iter().find(|(k, _)| *k == models_key) {
            match r {
                Ok(list) => known_models.extend(list.iter().cloned()),
                Err(e) => models_error = Some(e.clone()),
            }
        }
        if let ProbeState::Done(report) = &probe {
            for m in &report.models {
                if !known_models.contains(m) {
                    known_models.push(m.clone());
                }
            }
        }
        let mut list_models = false;
        egui::Grid::new("endpoint_editor")
            .num_columns(2)
            .spacing([10.0, 6.0])
            .show(ui, |ui| {
                let e = &mut self.draft.endpoints[i];
                text_row(ui, "Endpoint name", &mut e.name, "e.g. local vLLM");
                let label = ui.label("Base URL");
                ui.vertical(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut e.base_url)
                            .hint_text("http://localhost:8000/v1")
                            .desired_width(360.0),
                    )
                    .labelled_by(label.id);
                    ui.weak("vLLM :8000/v1 · Ollama :11434/v1 · llama.cpp :8080/v1 · LM Studio :1234/v1");
                });
                ui.end_row();
                let label = ui.label("Model");
                ui.horizontal(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut e.model)
                            .hint_text("the name the server expects")
                            .desired_width(260.0),
                    )
                    .labelled_by(label.id);
                    let served = egui::ComboBox::from_id_salt("served_models")
                        .selected_text("Served models")
                        .width(130.0)
                        .show_ui(ui, |ui| {
                            if known_models.is_empty() {
                                ui.weak("Press List models to ask the server");
                            }
                            for m in &known_models {
                                ui.selectable_value(&mut e.model, m.clone(), m);
                            }
                        });
                    // A combo box has no name of its own; screen readers and tests need one.
                    served.response.widget_info(|| {
                        egui::WidgetInfo::labeled(egui::Role::ComboBox, true, "Served models")
                    });
                    let listing = self.models_job.is_some();
                    if ui
                        .add_enabled(!listing, egui::Button::new("List models"))
                        .on_hover_text("Ask the server which models it serves")
                        .clicked()
                    {
                        list_models = true;
                    }
                    if listing {
                        ui.spinner();
                    }
                });
                ui.end_row();
                if let Some(err) = &models_error {
                    ui.label("");
                    ui.colored_label(ui.visuals().error_fg_color, elide(err, 160))
                        .on_hover_text(err.as_str());
                    ui.end_row();
                }
                let label = ui.label("API key variable");
                ui.horizontal(|ui| {
                    let mut var = e.api_key_env.clone().unwrap_or_default();
                    if ui
                        .add(
                            egui::TextEdit::singleline(&mut var)
                                .hint_text("none: no key is sent")
                                .desired_width(200.0),
                        )
                        .labelled_by(label.id)
                        .on_hover_text(
                            "The NAME of the environment variable that holds the key \
                             (e.g. OPENAI_API_KEY), never the key itself",
                        )
                        .changed()
                    {
                        e.api_key_env = (!var.trim().is_empty()).then(|| var.trim().to_string());
                    }
                    match e.api_key_env.as_deref() {
                        None => {
                            ui.weak("no key is sent");
                        }
                        Some(v) if services::api_key_is_set(v) => {
                            ui.colored_label(ok_color(ui), format!("{v} is set"));
                        }
                        Some(v) => {
                            ui.colored_label(
                                ui.visuals().error_fg_color,
                                format!("{v} is not set"),
                            )
                            .on_hover_text(
                                "Export it in the shell that starts the workbench, then restart",
                            );
                        }
                    }
                });
                ui.end_row();
                let label = ui.label("Timeout");
                ui.add(
                    egui::DragValue::new(&mut e.timeout_s)
                        .range(1.0..=3600.0)
                        .speed(1.0)
                        .suffix(" s"),
                )
                .labelled_by(label.id)
                .on_hover_text("Limit for one request, reply included");
                ui.end_row();
                let label = ui.label("Requests at once");
                ui.add(egui::DragValue::new(&mut e.max_in_flight).range(1..=256))
                    .labelled_by(label.id)
                    .on_hover_text("How many requests a batch run keeps open on this endpoint");
                ui.end_row();
                let label = ui.label("Retries");
                ui.add(egui::DragValue::new(&mut e.max_retries).range(0..=10))
                    .labelled_by(label.id)
                    .on_hover_text(
                        "Further attempts after connection failures, timeouts, 429, 5xx and 200s that are not JSON",
                    );
                ui.end_row();
                price_row(ui, e);
            });
        if list_models {
            let cfg = self.draft.endpoints[i].clone();
            let label = format!("list models of {}", cfg.name);
            self.models_job = Some((
                models_key,
                TrackedJob::spawn("list models", label, move |_, cancel| {
                    services::list_models(cfg, cancel)
                }),
            ));
        }
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            if i == self.draft.active_endpoint {
                ui.weak("Inspect uses this endpoint.");
            } else if ui
                .button("Use for Inspect")
                .on_hover_text("Make this the active endpoint")
                .clicked()
            {
                self.draft.active_endpoint = i;
            }
            let probing = matches!(probe, ProbeState::Probing);
            if ui
                .add_enabled(!probing, egui::Button::new("Test"))
                .on_hover_text(
                    "Ask the server for its models and send one request with two small images, \
                     as Echo does (the settings as typed, saved or not)",
                )
                .clicked()
            {
                commands.push(Command::TestEndpoint(Box::new(
                    self.draft.endpoints[i].clone(),
                )));
            }
        });
        probe_result(ui, &probe);
    }
}

/// The endpoint's price per million tokens, for cost estimates, the actual cost and
/// `--max-cost`; unset means no cost is shown (never a cost of zero).
fn price_row(ui: &mut egui::Ui, e: &mut EndpointConfig) {
    ui.label("Price");
    ui.horizontal(|ui| {
        let mut priced = e.price().is_some();
        if ui
            .checkbox(&mut priced, "Priced")
            .on_hover_text(
                "What the provider charges per million tokens; leave off for a local server",
            )
            .changed()
        {
            e.set_price(priced.then_some(crate::mllm::Price {
                prompt_per_million: 0.0,
                completion_per_million: 0.0,
            }));
        }
        let Some(mut price) = e.price() else {
            ui.weak("no cost is shown for runs on it");
            return;
        };
        let prompt = ui.label("prompt per 1M");
        ui.add(
            egui::DragValue::new(&mut price.prompt_per_million)
                .range(0.0..=1.0e6)
                .speed(0.01)
                .max_decimals(4),
        )
        .labelled_by(prompt.id)
        .on_hover_text("Price of a million prompt tokens (images included)");
        let completion = ui.label("completion per 1M");
        ui.add(
            egui::DragValue::new(&mut price.completion_per_million)
                .range(0.0..=1.0e6)
                .speed(0.01)
                .max_decimals(4),
        )
        .labelled_by(completion.id)
        .on_hover_text("Price of a million completion tokens");
        e.set_price(Some(price));
    });
    ui.end_row();
}

/// What the last Test of this endpoint found: each capability and the reason.
pub(super) fn probe_result(ui: &mut egui::Ui, probe: &ProbeState) {
    match probe {
        ProbeState::Untested => {
            ui.weak(
                "Not tested yet: press Test to check the server, the model and two-image requests.",
            );
        }
        ProbeState::Probing => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Testing…");
            });
        }
        ProbeState::Done(report) => {
            let (mark, color) = if report.ok {
                ("Works", ok_color(ui))
            } else {
                ("Failed", ui.visuals().error_fg_color)
            };
            egui::Frame::group(ui.style()).show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.colored_label(color, format!("{mark}: {}", report.message));
                let yes_no = |b: bool| if b { "yes" } else { "no" };
                ui.weak(format!(
                    "model listed by the server: {} · two-image request answered: {} · {} ms",
                    yes_no(report.model_listed),
                    yes_no(report.two_images_ok),
                    report.latency_ms
                ));
                if !report.models.is_empty() {
                    ui.weak(elide(
                        &format!("served models: {}", report.models.join(", ")),
                        200,
                    ));
                }
                if let Some(reply) = &report.reply {
                    ui.weak(elide(&format!("reply: {}", reply.trim()), 200));
                }
            });
        }
    }
}
