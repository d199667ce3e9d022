//! Progress of long library calls (the anchor optimizers), reported to a [`Progress`] the caller
//! supplies. The library draws nothing itself: the `anchorkit` binary implements [`Progress`]
//! with terminal progress bars, and library users may log, forward or ignore the steps.

use std::fmt;
use std::sync::Arc;

/// Receives the progress of long library calls: one [`Progress::task`] call per task (for
/// example the generations of an evolution), whose steps are then reported to the returned
/// [`Task`]. Called from the thread running the library call.
pub trait Progress: Send + Sync {
    /// A task named `label` with `len` steps starts.
    fn task(&self, label: &str, len: u64) -> Box<dyn Task>;
}

/// One running task of a [`Progress`].
pub trait Task: Send + Sync {
    /// `n` more steps are done.
    fn inc(&self, n: u64);
    /// A short status (for example the best objective so far).
    fn set_message(&self, _msg: String) {}
    /// The task is over (all steps done, or stopped early on convergence).
    fn finish(&self) {}
}

/// A [`Task`] that ignores everything.
struct Silent;

impl Task for Silent {
    fn inc(&self, _n: u64) {}
}

/// Where an options struct sends progress: a shared [`Progress`], or nowhere (the default).
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<dyn Progress>>);

impl ProgressSink {
    /// Progress is not reported.
    pub fn silent() -> Self {
        ProgressSink(None)
    }

    /// Progress goes to `p`.
    pub fn new(p: impl Progress + 'static) -> Self {
        ProgressSink(Some(Arc::new(p)))
    }

    /// Start a task of `len` steps (a no-op task when silent).
    pub fn task(&self, label: &str, len: u64) -> Box<dyn Task> {
        match &self.0 {
            Some(p) => p.task(label, len),
            None => Box::new(Silent),
        }
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressSink(reporting)"
        } else {
            "ProgressSink(silent)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records `(label, len)` of every task and the steps reported.
    #[derive(Default)]
    struct Log(Arc<Mutex<Vec<String>>>);

    struct LogTask(Arc<Mutex<Vec<String>>>);

    impl Progress for Log {
        fn task(&self, label: &str, len: u64) -> Box<dyn Task> {
            self.0.lock().unwrap().push(format!("start {label} {len}"));
            Box::new(LogTask(self.0.clone()))
        }
    }

    impl Task for LogTask {
        fn inc(&self, n: u64) {
            self.0.lock().unwrap().push(format!("inc {n}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".into());
        }
    }

    #[test]
    fn sink_forwards_to_the_progress_and_silent_drops() {
        let log = Log::default();
        let lines = log.0.clone();
        let sink = ProgressSink::new(log);
        let t = sink.clone().task("evolving", 3);
        t.inc(2);
        t.set_message("ignored by LogTask".into());
        t.finish();
        assert_eq!(
            *lines.lock().unwrap(),
            ["start evolving 3", "inc 2", "finish"]
        );
        assert_eq!(format!("{sink:?}"), "ProgressSink(reporting)");
        let silent = ProgressSink::default();
        silent.task("x", 1).inc(1);
        assert_eq!(format!("{silent:?}"), "ProgressSink(silent)");
    }
}
