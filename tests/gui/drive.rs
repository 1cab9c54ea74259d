//! Driving the app in a test: a harness the size of a laptop screen, and stepping
//! frames until work done on background threads has landed.

use std::cell::Cell;
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
    let _shared = stepping();
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

/// Frame loops of tests that measure time run alone: every other test's loop holds
/// this shared, a timing test holds it exclusively ([`alone`]). Each tab once had
/// its own test binary, and binaries run one after another.
static FRAME_LOOPS: RwLock<()> = RwLock::new(());

thread_local! {
    /// Set on a test's thread while it holds [`FRAME_LOOPS`] exclusively, so that
    /// its own waits do not wait for it.
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

fn stepping() -> Option<RwLockReadGuard<'static, ()>> {
    if ALONE.with(Cell::get) {
        return None;
    }
    Some(FRAME_LOOPS.read().unwrap_or_else(|e| e.into_inner()))
}

/// While held, no other test of this binary steps frames in a wait.
pub struct Alone {
    _exclusive: RwLockWriteGuard<'static, ()>,
}

pub fn alone() -> Alone {
    let exclusive = FRAME_LOOPS.write().unwrap_or_else(|e| e.into_inner());
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
