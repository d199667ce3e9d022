//! Latency harness for `anchorkit bench`: per-stage latency histograms (HDR, nanosecond
//! resolution), the report (human table + JSON), comparison against an earlier report,
//! execution-provider verification from ONNX Runtime's profile ([`crate::runtime::profile`])
//! and bare `Session::run` throughput.
//!
//! Stages, as in trtexec / onnxruntime_perf_test style reports but split the way a detector
//! pipeline is: `decode` (JPEG/PNG bytes in memory -> RGB8), `preprocess` (resize, normalize,
//! pad into the NCHW buffer), `inference` (`Session::run` plus copying the head outputs out),
//! `postprocess` (score scan, top-k, decode, NMS), `end_to_end` (wall time of the four for one
//! image). One-time costs (library load, session creation, first iteration, which includes a
//! TensorRT engine build) are reported apart and never mixed into the percentiles.

use crate::error::{Error, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Stage names in report order.
pub const STAGES: [&str; 5] = [
    "decode",
    "preprocess",
    "inference",
    "postprocess",
    "end_to_end",
];

/// A latency recorder: an HDR histogram in nanoseconds (3 significant digits, 1 ns .. 1 h).
pub struct Recorder {
    h: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Recorder {
            h: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
        }
    }

    /// Records one duration (saturating at the histogram's 1 h bound).
    pub fn record(&mut self, d: std::time::Duration) {
        let ns = (d.as_nanos().min(u128::from(u64::MAX)) as u64).clamp(1, self.h.high());
        self.h.saturating_record(ns);
    }

    /// Adds all samples of `other`.
    pub fn merge(&mut self, other: &Recorder) {
        let _ = self.h.add(&other.h);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// Summary in milliseconds (HDR percentiles: the value at or below which the given share
    /// of samples falls, at 3 significant digits).
    pub fn stats(&self) -> StageStats {
        let ms = |ns: u64| ns as f64 / 1e6;
        StageStats {
            count: self.h.len(),
            mean_ms: self.h.mean() / 1e6,
            p50_ms: ms(self.h.value_at_quantile(0.50)),
            p90_ms: ms(self.h.value_at_quantile(0.90)),
            p99_ms: ms(self.h.value_at_quantile(0.99)),
            p999_ms: ms(self.h.value_at_quantile(0.999)),
            max_ms: ms(self.h.max()),
        }
    }
}

/// Latency summary of one stage, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Share of node time per execution provider, read from ONNX Runtime's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpShare {
    /// Provider name (e.g. `CPUExecutionProvider`).
    pub provider: String,
    /// Number of node kernel executions.
    pub nodes: u64,
    /// Summed kernel time, microseconds.
    pub time_us: u64,
    /// Share of total node time, 0..1.
    pub share: f64,
}

/// Bare `Session::run` measurement: the same session options and input shape, a fixed tensor,
/// no decode / preprocess / postprocess / output copies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BareRun {
    /// Images per run (`--batch`).
    pub batch: usize,
    /// Latency per run.
    pub latency: StageStats,
    /// Images per second.
    pub throughput_ips: f64,
}

/// The JSON report of `anchorkit bench` (and of `tools/bench_baseline.py`, which writes the
/// same layout so either can be the `--baseline`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Producer and versions.
    pub tool: String,
    /// Model file.
    pub model: String,
    /// Image directory or `synthetic WxH`.
    pub source: String,
    /// Execution provider requested.
    pub ep: String,
    /// ONNX Runtime intra-op threads (0 = ORT default).
    pub threads: usize,
    /// Images per `Session::run` in the bare measurement.
    pub batch: usize,
    /// `sequential` or `pipeline`.
    pub mode: String,
    /// Warm-up iterations (not measured).
    pub warmup: usize,
    /// Measured iterations.
    pub iters: usize,
    /// Rounds in which the measured loop and the bare `Session::run` alternated (1 = one
    /// after the other; older reports and the Python baseline have 1).
    #[serde(default = "one")]
    pub rounds: usize,
    /// One-time costs, milliseconds (`library_load_ms`, `session_create_ms`,
    /// `first_iteration_ms`).
    pub one_time: BTreeMap<String, f64>,
    /// Per-stage latency.
    pub stages: BTreeMap<String, StageStats>,
    /// Images per second over the measured iterations (wall clock).
    pub throughput_ips: f64,
    /// Mean number of detections per image.
    #[serde(default)]
    pub detections_per_image: f64,
    /// Bare `Session::run` throughput, for the pipeline efficiency figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_run: Option<BareRun>,
    /// Node time per provider from the profile (empty if not verified).
    #[serde(default)]
    pub ep_check: Vec<EpShare>,
    /// Node runs outside the requested provider by op type, each classified (deliberate CPU
    /// shape node, copy, or fallback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ep_elsewhere: Vec<crate::runtime::profile::OpCount>,
    /// Machine description.
    #[serde(default)]
    pub machine: BTreeMap<String, serde_json::Value>,
    /// The model's precision (`FP32`, `FP16`, `INT8 (QDQ)`; see [`crate::precision`]), when
    /// known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

fn one() -> usize {
    1
}

impl BenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "model {}  |  {}  |  ep {}  threads {}  |  {} mode, {} warm-up + {} measured in {} round(s)\n",
            self.model,
            self.source,
            self.ep,
            self.threads,
            self.mode,
            self.warmup,
            self.iters,
            self.rounds
        );
        let once: Vec<String> = self
            .one_time
            .iter()
            .map(|(k, v)| format!("{} {v:.1} ms", k.trim_end_matches("_ms")))
            .collect();
        s.push_str(&format!("one-time: {}\n", once.join(", ")));
        s.push_str(&format!(
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "stage", "mean ms", "p50", "p90", "p99", "p99.9", "max"
        ));
        for st in STAGES {
            if let Some(v) = self.stages.get(st) {
                s.push_str(&format!(
                    "{st:<12} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
                    v.mean_ms, v.p50_ms, v.p90_ms, v.p99_ms, v.p999_ms, v.max_ms
                ));
            }
        }
        s.push_str(&format!(
            "throughput {:.2} images/s, {:.1} detections/image\n",
            self.throughput_ips, self.detections_per_image
        ));
        if let Some(b) = &self.bare_run {
            s.push_str(&format!(
                "bare Session::run (batch {}): p50 {:.3} ms, {:.2} images/s; {} throughput = {:.1}% of it\n",
                b.batch,
                b.latency.p50_ms,
                b.throughput_ips,
                self.mode,
                100.0 * self.throughput_ips / b.throughput_ips.max(f64::MIN_POSITIVE)
            ));
        }
        if !self.ep_check.is_empty() {
            let parts: Vec<String> = self
                .ep_check
                .iter()
                .map(|e| format!("{} {:.1}% ({} nodes)", e.provider, 100.0 * e.share, e.nodes))
                .collect();
            s.push_str(&format!("node time by provider: {}\n", parts.join(", ")));
        }
        s
    }

    /// Why ratios against `base` may compare unlike runs: another model file (by file name)
    /// or another image source. Empty when both match.
    pub fn baseline_mismatches(&self, base: &BenchReport) -> Vec<String> {
        let name = |m: &str| {
            Path::new(m)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| m.to_string())
        };
        let mut v = vec![];
        if name(&self.model) != name(&base.model) {
            v.push(format!(
                "the baseline measured another model ({}, this run: {}); the ratios compare \
                 different models",
                base.model, self.model
            ));
        }
        if self.source != base.source {
            v.push(format!(
                "the baseline measured other images ({}, this run: {})",
                base.source, self.source
            ));
        }
        v
    }

    /// Ratios against an earlier report, per stage and percentile (`baseline / this`: above 1
    /// means this run is faster) and throughput (`this / baseline`), after a warning line per
    /// [`BenchReport::baseline_mismatches`].
    pub fn compare(&self, base: &BenchReport) -> String {
        let mut s = String::new();
        for w in self.baseline_mismatches(base) {
            s.push_str(&format!("warning: {w}\n"));
        }
        s.push_str(&format!(
            "vs baseline {} ({}): ratio = baseline / this (>1: this is faster)\n",
            base.tool, base.model
        ));
        if let (Some(b), Some(t)) = (&base.precision, &self.precision)
            && b != t
        {
            s.push_str(&format!(
                "precision: baseline {b}, this {t}: the ratios below are {b} / {t}\n"
            ));
        }
        s.push_str(&format!(
            "{:<12} {:>9} {:>9} {:>9} {:>9}\n",
            "stage", "mean", "p50", "p90", "p99"
        ));
        let r = |b: f64, t: f64| if t > 0.0 { b / t } else { f64::NAN };
        for st in STAGES {
            if let (Some(t), Some(b)) = (self.stages.get(st), base.stages.get(st)) {
                s.push_str(&format!(
                    "{st:<12} {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x\n",
                    r(b.mean_ms, t.mean_ms),
                    r(b.p50_ms, t.p50_ms),
                    r(b.p90_ms, t.p90_ms),
                    r(b.p99_ms, t.p99_ms)
                ));
            }
        }
        s.push_str(&format!(
            "throughput   {:>8.2}x ({:.2} vs {:.2} images/s)\n",
            r(self.throughput_ips, base.throughput_ips),
            self.throughput_ips,
            base.throughput_ips
        ));
        s
    }
}

/// Reads a report written by `anchorkit bench --json` or `tools/bench_baseline.py --json`.
///
/// Errors: [`Error::Io`], or [`Error::Dataset`] naming the file if it is not such a report.
pub fn read_report(path: &Path) -> Result<BenchReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Dataset {
        path: path.to_path_buf(),
        line: Some(e.line()),
        msg: format!("not a bench report: {e}"),
    })
}

/// A fixed synthetic RGB image of `w x h` (horizontal red ramp, vertical green ramp, 32-px
/// blue checkerboard); `tools/bench_baseline.py` draws the same one.
pub fn synthetic_image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let r = (x as u64 * 255 / (w.max(2) - 1) as u64) as u8;
        let g = (y as u64 * 255 / (h.max(2) - 1) as u64) as u8;
        let b = (((x / 32 + y / 32) % 2) * 200 + 25) as u8;
        image::Rgb([r, g, b])
    })
}

/// JPEG-encodes an image (quality 90) in memory, so the decode stage has real work.
///
/// Errors: [`Error::Image`] if encoding fails.
pub fn encode_jpeg(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    enc.encode_image(img).map_err(|e| Error::Image {
        path: "synthetic.jpg".into(),
        msg: e.to_string(),
    })?;
    Ok(out)
}

/// Parses `WxH` (e.g. `640x480`). Errors: [`Error::InvalidInput`].
pub fn parse_wxh(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::InvalidInput(format!("{s:?} is not WIDTHxHEIGHT (e.g. 640x480)"));
    let lower = s.to_ascii_lowercase();
    let (w, h) = lower.split_once('x').ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 {
        return Err(Error::InvalidInput(format!(
            "{s:?} has a zero size; width and height must be at least 1"
        )));
    }
    if w > 16384 || h > 16384 {
        return Err(Error::InvalidInput(format!(
            "{s:?} is too large; width and height must be at most 16384"
        )));
    }
    Ok((w, h))
}

/// How many iterations to run: `warmup` unmeasured ones, then `iters`, or as many as fit in
/// `duration` when given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Unmeasured iterations first.
    pub warmup: usize,
    /// Measured iterations (ignored when `duration` is set).
    pub iters: usize,
    /// Measure for this long instead of a count.
    pub duration: Option<std::time::Duration>,
}

impl Plan {
    /// The share of round `r` of `rounds` (0-based): `iters` split as evenly as possible (at
    /// least 1 each), `duration / rounds`; the full warmup in round 0, at most 2 iterations
    /// (to refill pipelines and caches) in later rounds.
    pub fn round(&self, r: usize, rounds: usize) -> Plan {
        let rounds = rounds.max(1);
        Plan {
            warmup: if r == 0 {
                self.warmup
            } else {
                self.warmup.min(2)
            },
            iters: (self.iters * (r + 1) / rounds - self.iters * r / rounds).max(1),
            duration: self.duration.map(|d| d / rounds as u32),
        }
    }

    /// Checks the plan for `rounds` rounds and returns the rounds to run, with a note when
    /// they were lowered: `iters` below `rounds` runs `iters` rounds of one iteration (each
    /// round measures at least one).
    ///
    /// Errors: [`Error::InvalidInput`] for `iters == 0` without a duration, or `rounds == 0`.
    pub fn checked_rounds(&self, rounds: usize) -> Result<(usize, Option<String>)> {
        if rounds == 0 {
            return Err(Error::InvalidInput("--rounds must be at least 1".into()));
        }
        if self.duration.is_some() {
            return Ok((rounds, None));
        }
        if self.iters == 0 {
            return Err(Error::InvalidInput(
                "--iters must be at least 1 (or give --duration)".into(),
            ));
        }
        if self.iters < rounds {
            return Ok((
                self.iters,
                Some(format!(
                    "--iters {} is less than --rounds {rounds}: running {} round(s) of 1 iteration",
                    self.iters, self.iters
                )),
            ));
        }
        Ok((rounds, None))
    }

    /// Whether measuring is finished after `n` measured iterations started at `start`.
    pub fn done(&self, n: usize, start: std::time::Instant) -> bool {
        match self.duration {
            Some(d) => n > 0 && start.elapsed() >= d,
            None => n >= self.iters.max(1),
        }
    }
}

/// Measures bare `Session::run` on a fixed input: `tensor` is one image `[1, 3, h, w]`,
/// repeated `batch` times along N, run per `plan`.
///
/// Errors: [`Error::Runtime`] from ONNX Runtime (e.g. a graph with a fixed batch of 1 and
/// `batch > 1`).
pub fn bare_run(
    session: &mut ort::session::Session,
    input_name: &str,
    tensor: &[f32],
    hw: (usize, usize),
    batch: usize,
    plan: Plan,
) -> Result<BareRun> {
    let mut acc = BareAcc::new(input_name, tensor, hw, batch);
    acc.run(session, plan)?;
    Ok(acc.report())
}

/// Bare `Session::run` measurement accumulated over several rounds: the batched input is
/// built once, and each [`Self::run`] adds its runs, latencies and wall time, so a bench can
/// alternate it with the measured loop and compare throughputs taken under the same load.
pub struct BareAcc {
    input_name: String,
    data: Vec<f32>,
    shape: [usize; 4],
    rec: Recorder,
    runs: usize,
    wall_s: f64,
}

impl BareAcc {
    /// `tensor` is one image `[1, 3, h, w]` (`hw = (h, w)`), repeated `batch` times along N.
    pub fn new(input_name: &str, tensor: &[f32], hw: (usize, usize), batch: usize) -> Self {
        let b = batch.max(1);
        BareAcc {
            input_name: input_name.to_string(),
            data: tensor.repeat(b),
            shape: [b, 3, hw.0, hw.1],
            rec: Recorder::new(),
            runs: 0,
            wall_s: 0.0,
        }
    }

    /// One round: `plan.warmup` unmeasured runs, then the measured ones.
    ///
    /// Errors: as [`bare_run`].
    pub fn run(&mut self, session: &mut ort::session::Session, plan: Plan) -> Result<()> {
        let (shape, data, name) = (self.shape, self.data.as_slice(), self.input_name.as_str());
        let run = |session: &mut ort::session::Session| -> Result<()> {
            let t = ort::value::TensorRef::from_array_view((shape, data))
                .map_err(|e| Error::Runtime(format!("input {shape:?}: {e}")))?;
            session
                .run(ort::inputs![name => t])
                .map_err(|e| Error::Runtime(format!("bare run with input {shape:?}: {e}")))?;
            Ok(())
        };
        for _ in 0..plan.warmup {
            run(session)?;
        }
        let start = std::time::Instant::now();
        let mut n = 0usize;
        while !plan.done(n, start) {
            let t = std::time::Instant::now();
            run(session)?;
            self.rec.record(t.elapsed());
            n += 1;
        }
        self.wall_s += start.elapsed().as_secs_f64();
        self.runs += n;
        Ok(())
    }

    /// The merged measurement: latency per run and images/s over the summed wall time.
    pub fn report(&self) -> BareRun {
        let b = self.shape[0];
        BareRun {
            batch: b,
            latency: self.rec.stats(),
            throughput_ips: (self.runs * b) as f64 / self.wall_s.max(f64::MIN_POSITIVE),
        }
    }
}

/// Runs `runs` inferences on a separate session built with ONNX Runtime profiling on (same
/// options otherwise) and returns node time per provider from the profile, which shows where
/// the nodes really ran (ort has no equivalent of Python's `get_providers()`; the profile's
/// `cat == "Node"` events carry `args.provider`).
///
/// Errors: session creation / run errors, or a profile without node events.
pub fn profile_providers(
    model: &Path,
    opts: &crate::runtime::RuntimeOptions,
    input_name: &str,
    tensor: &[f32],
    hw: (usize, usize),
    runs: usize,
) -> Result<crate::runtime::profile::ProfileSummary> {
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut o = opts.clone();
    o.profile_prefix = Some(dir.path().join("anchorkit_profile"));
    let (mut session, _) = crate::runtime::session(model, &o)?;
    let plan = Plan {
        warmup: 0,
        iters: runs.max(1),
        duration: None,
    };
    bare_run(&mut session, input_name, tensor, hw, 1, plan)?;
    let file = session
        .end_profiling()
        .map_err(|e| Error::Runtime(format!("end_profiling: {e}")))?;
    let p = Path::new(&file);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        // ORT writes relative to the process's working directory.
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let summary = crate::runtime::profile::summarize_file(&p, o.ep.ort_name());
    let _ = std::fs::remove_file(&p);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_percentiles() {
        let mut r = Recorder::new();
        for i in 1..=1000u64 {
            r.record(std::time::Duration::from_micros(i));
        }
        let s = r.stats();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.001, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.001, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.001, "{s:?}");
        assert!((s.mean_ms - 0.5005).abs() < 0.001, "{s:?}");
    }

    #[test]
    fn profile_parsing_counts_kernel_time_per_provider() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("prof.json");
        std::fs::write(
            &p,
            r#"[{"cat":"Session","name":"model_run","dur":500},
                {"cat":"Node","name":"conv_kernel_time","dur":300,"args":{"provider":"CUDAExecutionProvider"}},
                {"cat":"Node","name":"conv_fence_before","dur":5,"args":{"provider":"CUDAExecutionProvider"}},
                {"cat":"Node","name":"nms_kernel_time","dur":100,"args":{"provider":"CPUExecutionProvider"}}]"#,
        )
        .unwrap();
        let sum = crate::runtime::profile::summarize_file(&p, "CUDAExecutionProvider").unwrap();
        let s = &sum.shares;
        assert_eq!(s[0].provider, "CUDAExecutionProvider");
        assert_eq!(s[0].nodes, 1);
        assert!((s[0].share - 0.75).abs() < 1e-12);
        let e = sum.check("CUDAExecutionProvider", true).unwrap_err();
        assert!(e.to_string().contains("CPUExecutionProvider"), "{e}");
        assert!(sum.check("CUDAExecutionProvider", false).is_ok());
    }

    #[test]
    fn plans_with_nothing_to_measure_are_errors() {
        let p = |iters| Plan {
            warmup: 0,
            iters,
            duration: None,
        };
        assert!(p(0).checked_rounds(3).is_err());
        assert!(p(10).checked_rounds(0).is_err());
        assert_eq!(p(10).checked_rounds(3).unwrap(), (3, None));
        let (r, note) = p(2).checked_rounds(3).unwrap();
        assert_eq!(r, 2);
        assert!(note.unwrap().contains("--iters 2"));
        let d = Plan {
            duration: Some(std::time::Duration::from_secs(1)),
            ..p(0)
        };
        assert_eq!(d.checked_rounds(3).unwrap(), (3, None));
    }

    #[test]
    fn baseline_of_another_model_is_flagged() {
        let r = BenchReport {
            tool: "anchorkit".into(),
            model: "models/a.onnx".into(),
            source: "synthetic 640x480".into(),
            ep: "cpu".into(),
            threads: 0,
            batch: 1,
            mode: "sequential".into(),
            warmup: 0,
            iters: 1,
            rounds: 1,
            one_time: BTreeMap::new(),
            stages: BTreeMap::new(),
            throughput_ips: 1.0,
            detections_per_image: 0.0,
            bare_run: None,
            ep_check: vec![],
            ep_elsewhere: vec![],
            machine: BTreeMap::new(),
            precision: None,
        };
        let same = BenchReport {
            model: "/elsewhere/a.onnx".into(),
            ..r.clone()
        };
        assert!(r.baseline_mismatches(&same).is_empty());
        let other = BenchReport {
            model: "b.onnx".into(),
            ..r.clone()
        };
        let c = r.compare(&other);
        assert!(
            c.starts_with("warning: the baseline measured another model (b.onnx"),
            "{c}"
        );
    }

    #[test]
    fn wxh_parsing() {
        assert_eq!(parse_wxh("640x480").unwrap(), (640, 480));
        assert!(parse_wxh("640").is_err());
        let e = parse_wxh("0x0").unwrap_err().to_string();
        assert!(e.contains("zero size"), "{e}");
        let e = parse_wxh("640x99999").unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
    }
}
