//! COCO-style detection evaluation, identical to pycocotools' `COCOeval` (bbox).
//!
//! - [`coco`]: ground truth / detection types and readers (COCO instances JSON, COCO results
//!   JSON, anchorkit JSONL) and atomic writers;
//! - [`voc`]: Pascal VOC XML ground truth converted to COCO form in memory;
//! - [`cocoeval`]: the protocol (matching, accumulation, the 12 summary numbers, per-class AP).
//!
//! ```no_run
//! use anchorkit::eval::{coco, cocoeval};
//! # fn main() -> anchorkit::Result<()> {
//! let gt = coco::read_coco_gt("instances_val2017.json".as_ref())?;
//! let dets = coco::read_detections("results.json".as_ref(), &gt, coco::ClassMapping::Name)?;
//! let r = cocoeval::evaluate(&gt, &dets)?;
//! print!("{}", r.summary_text());
//! # Ok(()) }
//! ```

pub mod coco;
pub mod cocoeval;
pub mod voc;

pub use coco::{ClassMapping, CocoGt, DetRecord};
pub use cocoeval::{EvalResult, STAT_NAMES, evaluate};
