//! Decode + resize + normalize (+ pad) of a real JPEG to the mmdet keep-ratio input
//! (1333x800, size_divisor 32), single thread. Target <= 6 ms for a 1-2 MP JPEG.
//!
//! No photo in `../shared/photos` is 1-2 MP; the largest JPEG is `registry/blood_smear_cbc.jpg`
//! (1226x652, 0.8 MP). It is timed as is, and also upscaled (bilinear) to 1280x800 (1.0 MP)
//! and 1600x1200 (1.9 MP) and re-encoded at JPEG quality 90 in memory (the image crate's
//! encoder: 4:2:2 chroma, more to decode than a camera's 4:2:0), to time the 1-2 MP class.
//!
//! JPEG decoding uses libjpeg-turbo when it loads (`preprocess::libjpeg`, OpenCV-exact); the
//! `decode_only_zune_*` lines time the image crate's pure-Rust decoder on the same bytes.
//!
//! Run: `cargo bench --bench preprocess`

use anchorkit::preprocess::{Preprocessor, decode_image};
use anchorkit::spec::ResizeBackend;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;

mod common;

fn bench(c: &mut Criterion) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/photos/registry/blood_smear_cbc.jpg");
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("skipping: {} is absent", path.display());
        return;
    };
    let img = decode_image(&bytes, &path, true).unwrap();
    let upscaled = |w, h| {
        let big = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&big)
            .unwrap();
        jpeg
    };
    let (jpeg_1mp, jpeg_2mp) = (upscaled(1280, 800), upscaled(1600, 1200));
    eprintln!(
        "JPEG decoder: {}",
        anchorkit::preprocess::libjpeg::decoder_description()
    );
    // single thread: fast_image_resize (and anything else using rayon) sees one thread
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    let mut pre = Preprocessor::new(&common::mmdet_input());
    {
        for (name, data) in [
            ("blood_smear_1226x652", &bytes),
            ("blood_smear_up_1280x800_q90", &jpeg_1mp),
            ("blood_smear_up_1600x1200_q90", &jpeg_2mp),
        ] {
            let m = pre.run(&decode_image(data, &path, true).unwrap()).unwrap();
            eprintln!("{name}: {} bytes -> {m:?}", data.len());
            common::report_cpu_time(&format!("decode_resize_normalize_{name}"), 40, || {
                let img = decode_image(data, &path, true).unwrap();
                pre.run(&img).unwrap()
            });
            c.bench_function(&format!("decode_resize_normalize_{name}"), |b| {
                b.iter(|| {
                    let img = decode_image(black_box(data), &path, true).unwrap();
                    pre.run(&img).unwrap()
                })
            });
            c.bench_function(&format!("decode_only_{name}"), |b| {
                b.iter(|| decode_image(black_box(data), &path, true).unwrap())
            });
            c.bench_function(&format!("decode_only_zune_{name}"), |b| {
                b.iter(|| {
                    image::load_from_memory_with_format(black_box(data), image::ImageFormat::Jpeg)
                        .unwrap()
                })
            });
            let img = decode_image(data, &path, true).unwrap();
            c.bench_function(&format!("resize_normalize_only_{name}"), |b| {
                b.iter(|| pre.run(black_box(&img)).unwrap())
            });
            // the fast_image_resize backend (antialiased bilinear, not OpenCV-exact)
            let mut fir_input = common::mmdet_input();
            fir_input.resize_backend = ResizeBackend::FastImageResize;
            let mut fir_pre = Preprocessor::new(&fir_input);
            c.bench_function(&format!("resize_normalize_only_fir_{name}"), |b| {
                b.iter(|| fir_pre.run(black_box(&img)).unwrap())
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).without_plots();
    targets = bench
}
criterion_main!(benches);
