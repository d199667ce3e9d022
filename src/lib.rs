//! anchorkit: run dense object detectors trained with FreeAnchor / ATSS (and GFL, FCOS,
//! Pseudo-IoU) from ONNX with mmdetection-exact pre- and post-processing; benchmark latency,
//! evaluate COCO AP, and re-optimize anchor shapes for a new dataset.
//!
//! Pipeline (each stage a module with plain data in between):
//! `preprocess` (decode, resize, normalize, pad) -> `runtime` (ONNX Runtime session) ->
//! `head` (priors, score scan, decode) -> `postprocess` (rescale, NMS via `nms`) -> `output`.

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
pub mod preprocess;
pub mod runtime;
pub mod spec;

pub use detector::Detector;
pub use error::{Error, Result};
pub use postprocess::Detection;
pub use spec::DetectorSpec;
