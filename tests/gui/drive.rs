//! Driving the app in a test: a harness the size of a laptop screen, and stepping
//! frames until work done on background threads has landed.

use std::cell::{Cell, RefCell};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use echo_workbench::ui::WorkbenchApp;
use egui_kittest::Harness;

/// How long a wait may take before the test fails: background work on a loaded
/// two-core machine (the memory the shell builds at start) takes seconds.
const WAIT: Duration = Duration::from_secs(120);

pub fn harness(app: WorkbenchApp) -> Harness<'static, WorkbenchApp> {
    harness_sized(app, [1440.0, 900.0])
}

pub fn harness_sized(app: WorkbenchApp, size: [f32; 2]) -> Harness<'static, WorkbenchApp> {
    share();
    Harness::builder()
        .with_size(size)
        .build_ui_state(|ui, app: &mut WorkbenchApp| app.frame_ui(ui), app)
}

/// Steps frames until `done` holds of the state.
pub fn wait_for<S>(h: &mut Harness<'static, S>, what: &str, done: impl Fn(&S) -> bool) {
    step_until(h, what, WAIT, |h| done(h.state()));
}

/// [`wait_for`] with a limit of its own, for waits whose length is the point.
pub fn wait_for_secs<S>(
    h: &mut Harness<'static, S>,
    what: &str,
    secs: u64,
    done: impl Fn(&S) -> bool,
) {
    step_until(h, what, Duration::from_secs(secs), |h| done(h.state()));
}

/// Steps frames until `done` holds of the harness (what is drawn, not only the state).
pub fn wait_until<S>(
    h: &mut Harness<'static, S>,
    what: &str,
    done: impl FnMut(&mut Harness<'static, S>) -> bool,
) {
    step_until(h, what, WAIT, done);
}

fn step_until<S>(
    h: &mut Harness<'static, S>,
    what: &str,
    limit: Duration,
    mut done: impl FnMut(&mut Harness<'static, S>) -> bool,
) {
    share();
    let start = Instant::now();
    while !done(h) {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    // A click lands where a widget was drawn in the frame before; two more frames
    // let the layout settle on what just arrived.
    h.run_steps(2);
}

/// Tests that time frames run alone, as they did when each tab had a test binary
/// of its own (binaries run one after another): every other test holds this shared
/// from its first harness or wait until its thread ends, a timing test holds it
/// exclusively ([`alone`]).
static APP_TESTS: RwLock<()> = RwLock::new(());

thread_local! {
    /// This test thread's share of [`APP_TESTS`], dropped when the thread ends.
    static SHARE: RefCell<Option<RwLockReadGuard<'static, ()>>> = const { RefCell::new(None) };
    /// Set while this thread holds [`APP_TESTS`] exclusively.
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

fn share() {
    if ALONE.with(Cell::get) {
        return;
    }
    SHARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = Some(APP_TESTS.read().unwrap_or_else(|e| e.into_inner()));
        }
    });
}

/// While held, no other test of this binary drives the app.
pub struct Alone {
    _exclusive: RwLockWriteGuard<'static, ()>,
}

pub fn alone() -> Alone {
    // A thread that ran an earlier test (with one test thread, the main thread runs
    // them all) lets its share go first, or it would wait for itself.
    SHARE.with(|s| s.borrow_mut().take());
    let exclusive = APP_TESTS.write().unwrap_or_else(|e| e.into_inner());
    ALONE.with(|a| a.set(true));
    Alone {
        _exclusive: exclusive,
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.with(|a| a.set(false));
    }
}
