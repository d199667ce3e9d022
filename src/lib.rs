//! anchorkit: run dense object detectors trained with FreeAnchor / ATSS (and GFL, FCOS,
//! Pseudo-IoU) from ONNX with mmdetection-exact pre- and post-processing; benchmark latency,
//! evaluate COCO AP, and re-optimize anchor shapes for a new dataset.
//!
//! Pipeline (each stage a module with plain data in between):
//! `preprocess` (decode, resize, normalize, pad) -> `runtime` (ONNX Runtime session) ->
//! `head` (priors, score scan, decode) -> `postprocess` (rescale, NMS via `nms`) -> `output`.
//! [`Detector`] ties the stages together for one model; `docs/architecture.md` in the
//! repository maps every module.
//!
//! # Example: detect objects in an image
//!
//! Load the default BCCD model with the spec for the sample photo's magnification, run it on
//! `samples/blood_smear.jpg` and read the detections (boxes `[x1, y1, x2, y2]` in pixels of the
//! original image, score, index into the spec's `classes`). ONNX Runtime is loaded on first use
//! from `--ort-lib` / `ORT_DYLIB_PATH` / an installed Python `onnxruntime` (see
//! [`runtime::locate`]); [`runtime::RuntimeOptions`] also selects the execution provider and
//! threads.
//!
//! ```
//! use anchorkit::preprocess::load_image;
//! use anchorkit::runtime::RuntimeOptions;
//! use anchorkit::Detector;
//! use std::path::Path;
//!
//! let mut detector = Detector::load(
//!     Path::new("models/bccd_freeanchor_x24.onnx"),
//!     Some(Path::new("models/specs/bccd_freeanchor_x24-smear.json")), // None: the embedded spec
//!     &RuntimeOptions::default(),                                     // CPU, ONNX Runtime's threads
//! )?;
//! let image = load_image(
//!     Path::new("samples/blood_smear.jpg"),
//!     detector.spec().input.exif_orientation,
//! )?;
//! let detections = detector.detect(&image)?; // sorted by score, at most max_per_img
//!
//! let classes = &detector.spec().classes; // ["RBC", "WBC", "Platelets"]
//! for d in detections.iter().filter(|d| d.score >= 0.5) {
//!     let [x1, y1, x2, y2] = d.bbox;
//!     println!("{} {:.2} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]", classes[d.class_id], d.score);
//! }
//! let count = |name: &str| {
//!     detections
//!         .iter()
//!         .filter(|d| d.score >= 0.5 && classes[d.class_id] == name)
//!         .count()
//! };
//! // the photo shows one white cell and six platelets
//! assert_eq!((count("WBC"), count("Platelets")), (1, 6));
//! # Ok::<(), anchorkit::Error>(())
//! ```

pub mod anchor_opt;
pub mod bench;
pub mod dataset;
pub mod detector;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod head;
pub mod nms;
pub mod output;
pub mod postprocess;
pub mod precision;
pub mod preprocess;
pub mod progress;
pub mod runtime;
pub mod shapes;
pub mod simd;
pub mod spec;

pub use detector::Detector;
pub use error::{Error, Result};
pub use postprocess::Detection;
pub use spec::DetectorSpec;
