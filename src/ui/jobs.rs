//! Background work for the UI: a named poll-promise whose error is a message.

use poll_promise::Promise;

pub struct Job<T: Send + 'static> {
    name: &'static str,
    promise: Option<Promise<Result<T, String>>>,
}

impl<T: Send + 'static> Job<T> {
    /// Runs `work` on its own thread; a panic becomes an error message, not a crash.
    pub fn spawn(
        name: &'static str,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Self {
        let promise = Promise::spawn_thread(name, move || {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(crate::util::error::chain(e.as_ref())),
                Err(_) => Err(format!("{name} failed unexpectedly (internal error)")),
            }
        });
        Job {
            name,
            promise: Some(promise),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The result, once, when the work has finished.
    pub fn take(&mut self) -> Option<Result<T, String>> {
        let promise = self.promise.take()?;
        match promise.try_take() {
            Ok(result) => Some(result),
            Err(pending) => {
                self.promise = Some(pending);
                None
            }
        }
    }

    /// Blocks until done (tests only: the UI never waits).
    pub fn block(mut self) -> Result<T, String> {
        match self.promise.take() {
            Some(p) => p.block_and_take(),
            None => Err("job result already taken".into()),
        }
    }
}
