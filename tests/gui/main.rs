//! The app driven through egui_kittest, one module per tab or view, in one binary
//! (built only with the `gui` feature): widgets are found by their labels, clicked,
//! and the app's state is asserted. No display is needed.
#![cfg(feature = "gui")]

#[path = "../common/mod.rs"]
mod common;
mod drive;

mod app;
mod batch;
mod calibration;
mod compare;
mod inspect;
mod knowledge;
mod protocols;
mod settings;
