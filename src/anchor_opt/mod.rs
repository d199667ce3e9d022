//! Anchor re-optimization: shape objectives ([`objective`]), optimizers ([`kmeans`]), the
//! mmdet anchor layout ([`anchors`]), the assigner-aware evaluation on real FPN grids
//! ([`assign`]), orchestration ([`run`]) and reporting ([`report`]).

pub mod anchors;
pub mod assign;
pub mod de;
pub mod evolve;
pub mod kmeans;
pub mod learned;
pub mod mmdet_cfg;
pub mod objective;
pub mod plot;
pub mod report;
pub mod run;

pub use anchors::{AnchorSet, Layout};
pub use objective::{ShapeProblem, ShapeScores};
