//! Terminal progress bars for the library's [`Progress`] reports.

use anchorkit::progress::{Progress, ProgressSink, Task};
use indicatif::{ProgressBar, ProgressStyle};

/// One progress bar on stderr per task (indicatif hides it when stderr is not a terminal).
pub struct Bars;

impl Progress for Bars {
    fn task(&self, label: &str, len: u64) -> Box<dyn Task> {
        let b = ProgressBar::new(len);
        if let Ok(st) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
        {
            b.set_style(st.progress_chars("=> "));
        }
        b.set_prefix(label.to_string());
        Box::new(Bar(b))
    }
}

struct Bar(ProgressBar);

impl Task for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn set_message(&self, msg: String) {
        self.0.set_message(msg);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Progress bars unless `quiet`.
pub fn bars(quiet: bool) -> ProgressSink {
    if quiet {
        ProgressSink::silent()
    } else {
        ProgressSink::new(Bars)
    }
}
