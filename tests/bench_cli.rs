//! `anchorkit bench` and its library parts on real ONNX Runtime sessions: bare `Session::run`,
//! execution-provider verification from the profile, and GPU providers failing fast on a
//! machine without them. Needs `../shared` (NanoDet-m) and a loadable libonnxruntime (the tools
//! venv); a test skips with a message naming what is missing.

use anchorkit::bench::{self, Plan};
use anchorkit::runtime::{self, Ep, RuntimeOptions};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// NanoDet-m 320 and its sidecar spec, or None (skip) when ../shared is absent.
fn nanodet() -> Option<(PathBuf, PathBuf)> {
    let m = root().join("../shared/models/nanodet-m-coco/nanodet-m-320.onnx");
    if !m.is_file() {
        eprintln!("SKIP: {} is absent (needs ../shared)", m.display());
        return None;
    }
    Some((m, root().join("models/specs/nanodet-m-320.json")))
}

fn runtime_ok() -> bool {
    match runtime::runtime(None) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP: no ONNX Runtime library: {e}");
            false
        }
    }
}

#[test]
fn bare_run_and_profile_on_cpu() {
    let Some((model, _)) = nanodet() else { return };
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
    let shares = bench::profile_providers(&model, &opts, "image", &tensor, (320, 320), 2).unwrap();
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0].provider, "CPUExecutionProvider");
    assert!(shares[0].nodes > 20 && (shares[0].share - 1.0).abs() < 1e-12);
}

#[test]
fn gpu_providers_fail_fast_without_a_gpu() {
    let Some((model, _)) = nanodet() else { return };
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
