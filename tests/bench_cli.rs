//! `anchorkit bench` and its library parts on real ONNX Runtime sessions: bare `Session::run`,
//! execution-provider verification from the profile, and GPU providers failing fast on a
//! machine without them. Needs `../shared` (NanoDet-m) and a loadable libonnxruntime (the tools
//! venv); a test skips with a message naming what is missing.

use anchorkit::bench::{self, Plan};
use anchorkit::runtime::{self, Ep, RuntimeOptions};

mod common;
use common::{RunOk, anchorkit, nanodet, runtime_ok};

#[test]
fn bare_run_and_profile_on_cpu() {
    let Some((model, _)) = nanodet(320) else {
        return;
    };
    if !runtime_ok() {
        return;
    }
    let opts = RuntimeOptions {
        threads: 1,
        ..RuntimeOptions::default()
    };
    let tensor = vec![0.25f32; 3 * 320 * 320];
    let (mut s, _) = runtime::session(&model, &opts).unwrap();
    let plan = Plan {
        warmup: 1,
        iters: 5,
        duration: None,
    };
    let b = bench::bare_run(&mut s, "image", &tensor, (320, 320), 1, plan).unwrap();
    assert_eq!(b.latency.count, 5);
    assert!(b.throughput_ips > 0.0 && b.latency.p50_ms > 0.0);
    let summary = bench::profile_providers(&model, &opts, "image", &tensor, (320, 320), 2).unwrap();
    assert!(summary.elsewhere.is_empty(), "{summary:?}");
    let shares = summary.shares;
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0].provider, "CPUExecutionProvider");
    assert!(shares[0].nodes > 20 && (shares[0].share - 1.0).abs() < 1e-12);
}

#[test]
fn gpu_providers_fail_fast_without_a_gpu() {
    let Some((model, _)) = nanodet(320) else {
        return;
    };
    if !runtime_ok() {
        return;
    }
    for ep in [Ep::Cuda, Ep::TensorRt] {
        let opts = RuntimeOptions {
            ep,
            ..RuntimeOptions::default()
        };
        let t = std::time::Instant::now();
        let Err(e) = runtime::session(&model, &opts) else {
            panic!("{ep}: a session was created; it must not run on CPU");
        };
        let msg = e.to_string();
        assert!(msg.contains(ep.ort_name()), "{msg}");
        assert!(msg.contains("Not falling back to CPU"), "{msg}");
        assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
    }
}

#[test]
fn bench_cli_sequential_pipeline_and_baseline() {
    let Some((model, spec)) = nanodet(320) else {
        return;
    };
    if !runtime_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A directory with one good image and one corrupt file: the bad one is reported, skipped.
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    bench::synthetic_image(200, 150)
        .save(imgs.join("a.png"))
        .unwrap();
    std::fs::write(imgs.join("b.jpg"), b"not a jpeg").unwrap();
    let j1 = dir.path().join("seq.json");
    let out = anchorkit()
        .args(["bench", "--model"])
        .arg(&model)
        .arg("--spec")
        .arg(&spec)
        .arg("--images")
        .arg(&imgs)
        .args(["--threads", "1", "--warmup", "1", "--iters", "4", "--json"])
        .arg(&j1)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("b.jpg"), "bad file not reported: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("end_to_end") && stdout.contains("p99.9"),
        "{stdout}"
    );
    let r = bench::read_report(&j1).unwrap();
    assert_eq!(r.iters, 4);
    // default: the 4 iterations and the bare runs alternate in 3 rounds (1 + 1 + 2)
    assert_eq!(r.rounds, 3);
    for st in bench::STAGES {
        assert_eq!(r.stages[st].count, 4, "{st}");
        assert!(r.stages[st].p50_ms > 0.0, "{st}");
    }
    let e2e = r.stages["end_to_end"].mean_ms;
    let parts: f64 = ["decode", "preprocess", "inference", "postprocess"]
        .iter()
        .map(|s| r.stages[*s].mean_ms)
        .sum();
    assert!(
        (e2e - parts).abs() < 0.05 * e2e + 0.05,
        "e2e {e2e} vs sum {parts}"
    );
    assert!(r.one_time["session_create_ms"] > 0.0);
    assert_eq!(r.ep_check[0].provider, "CPUExecutionProvider");
    assert!(r.bare_run.as_ref().unwrap().throughput_ips > 0.0);

    let j2 = dir.path().join("pipe.json");
    let out = anchorkit()
        .args(["bench", "--model"])
        .arg(&model)
        .arg("--spec")
        .arg(&spec)
        .args(["--synthetic", "320x240", "--threads", "1", "--warmup", "2"])
        .args(["--iters", "6", "--rounds", "2", "--pipeline"])
        .args(["--workers", "2"])
        .arg("--json")
        .arg(&j2)
        .arg("--baseline")
        .arg(&j1)
        .run_ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("vs baseline") && stdout.contains("throughput"),
        "{stdout}"
    );
    let r = bench::read_report(&j2).unwrap();
    // every measured image went through the post-processing thread too
    for st in bench::STAGES {
        assert_eq!(r.stages[st].count, 6, "{st}");
    }
    assert_eq!((r.iters, r.rounds), (6, 2));
    assert!(r.mode.starts_with("pipeline"));
    assert!(r.bare_run.as_ref().unwrap().latency.count >= 6);
}

#[test]
fn bench_cli_gpu_eps_fail_fast_and_bad_args() {
    let Some((model, spec)) = nanodet(320) else {
        return;
    };
    if !runtime_ok() {
        return;
    }
    for ep in ["cuda", "tensorrt"] {
        let t = std::time::Instant::now();
        let out = anchorkit()
            .args(["bench", "--model"])
            .arg(&model)
            .arg("--spec")
            .arg(&spec)
            .args(["--synthetic", "320x320", "--iters", "2", "--ep", ep])
            .output()
            .unwrap();
        assert!(!out.status.success(), "--ep {ep} must not run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ExecutionProvider") && err.contains("Not falling back to CPU"),
            "{err}"
        );
        assert!(
            t.elapsed().as_secs() < 30,
            "--ep {ep} took {:?}",
            t.elapsed()
        );
    }
    let out = anchorkit()
        .args(["bench", "--model"])
        .arg(&model)
        .arg("--spec")
        .arg(&spec)
        .args(["--synthetic", "320"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WIDTHxHEIGHT"));
}
