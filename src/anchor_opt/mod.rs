//! Anchor re-optimization: shape objectives ([`objective`]), optimizers ([`kmeans`]), the
//! mmdet anchor layout ([`anchors`]), the assigner-aware evaluation on real FPN grids
//! ([`assign`]), orchestration ([`run`]) and reporting ([`report`]).

pub mod anchors;
pub mod assign;
pub mod kmeans;
pub mod objective;
pub mod report;
pub mod run;

pub use anchors::{AnchorSet, Layout};
pub use objective::{ShapeProblem, ShapeScores};
