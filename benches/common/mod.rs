//! On-CPU time of the calling thread, for benchmarks on a shared (overloaded) machine.
//!
//! Criterion measures wall time, which on a loaded box includes time spent waiting for a
//! core. `/proc/thread-self/schedstat` (Linux) gives the nanoseconds this thread actually ran;
//! [`report_cpu_time`] prints both per iteration.

use std::time::Instant;

/// Nanoseconds the current thread has run on a CPU, if `/proc/thread-self/schedstat` exists.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Run `f` `iters` times; print wall and on-CPU time per iteration (milliseconds).
pub fn report_cpu_time<R>(name: &str, iters: u32, mut f: impl FnMut() -> R) {
    for _ in 0..iters.div_ceil(10) {
        std::hint::black_box(f());
    }
    let (c0, t0) = (thread_cpu_ns(), Instant::now());
    for _ in 0..iters {
        std::hint::black_box(f());
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / iters as f64;
    match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) => eprintln!(
            "{name}: wall {wall:.3} ms/iter, on-CPU {:.3} ms/iter ({iters} iters)",
            (b - a) as f64 / 1e6 / iters as f64
        ),
        _ => eprintln!("{name}: wall {wall:.3} ms/iter ({iters} iters; no schedstat)"),
    }
}

/// The mmdet default input: RGB, ImageNet mean/std, keep-ratio (1333, 800), pad to 32.
#[allow(dead_code)] // not every bench uses it
pub fn mmdet_input() -> anchorkit::spec::InputSpec {
    anchorkit::spec::InputSpec::mmdet_default()
}
