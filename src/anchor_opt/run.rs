//! The `anchors` job as a library call: optimize shapes with the chosen method on the mapped
//! boxes, then evaluate the default and the optimized anchor sets side by side (shape-only
//! scores of every peer objective plus the assigner statistics on real FPN grids).

use super::anchors::{AnchorSet, Layout, atss_default, retinanet_default};
use super::assign::{GridConfig, GridSummary, eval_all};
use super::de::{DeConfig, de, product_shapes};
use super::evolve::{EvolveConfig, evolve};
use super::kmeans::{KmeansConfig, kmeans};
use super::learned::{LearnedConfig, LearnedInit, learned};
use super::mmdet_cfg::MmdetAnchorGenerator;
use super::objective::{ShapeProblem, ShapeScores};
use crate::dataset::InputBoxes;
use crate::error::{Error, Result};
use crate::progress::ProgressSink;
use crate::spec::PriorSpec;
use serde::Serialize;
use std::time::Instant;

/// Optimization method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// IoU k-means (k-means++, restarts, IoU-ascent polish).
    Kmeans,
    /// YOLOv5: whitened k-means + genetic evolution of the ratio fitness.
    Evolve,
    /// Differential evolution over RetinaNet ratios x scales (A unchanged).
    De,
    /// Gradient-based learned anchors (Zhong et al.).
    Learned,
}

/// Which assigner the report leads with (and which default anchors it compares against).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Assigner {
    /// ATSS (default anchors: one 8*stride square).
    Atss,
    /// RetinaNet max-IoU 0.5/0.4 (default anchors: RetinaNet 9).
    MaxIou,
    /// FreeAnchor bags (default anchors: RetinaNet 9).
    Freeanchor,
    /// Pseudo-IoU point head (default anchors: RetinaNet 9; points are shape independent).
    PseudoIou,
}

impl Assigner {
    /// The anchors mmdet's reference config uses with this assigner.
    pub fn default_prior(self) -> PriorSpec {
        match self {
            Assigner::Atss => atss_default(),
            _ => retinanet_default(),
        }
    }
}

/// Options of [`optimize`].
#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    pub method: Method,
    /// Number of shapes (A in the fpn layout).
    pub k: usize,
    pub layout: Layout,
    pub strides: Vec<u32>,
    pub seed: u64,
    /// k-means restarts.
    pub restarts: usize,
    /// Run the method's final local search (kmeans, evolve, de).
    pub polish: bool,
    /// Generations (evolve) / max generations (de) / iterations (learned); 0 = method default.
    pub iterations: usize,
    /// Where the optimizers report their progress (silent by default).
    pub progress: ProgressSink,
    /// Initialization of the learned method.
    pub init: LearnedInit,
}

/// An optimized anchor set.
#[derive(Debug, Clone, Serialize)]
pub struct Optimized {
    pub method: Method,
    pub layout: Layout,
    pub seed: u64,
    /// Shapes in layout units (multiples of the stride for `fpn`, pixels for `free`).
    pub shapes: Vec<[f64; 2]>,
    /// The spec priors (explicit per-level shapes, or the mmdet ratios/scales for `de`).
    pub prior: PriorSpec,
    /// Name and value of the method's own objective.
    pub objective: (String, f64),
    /// Wall time of the optimization in seconds.
    pub seconds: f64,
    /// Method-specific details (iterations, restarts, ...).
    pub details: serde_json::Value,
    /// mmdetection `anchor_generator=dict(...)` snippet.
    pub mmdet: String,
    /// What the user should know about this result (parameters on a search bound, no
    /// improvement over the initialization, more shapes than distinct boxes); printed as
    /// warnings. [`compare_warnings`] adds the comparison with the default anchors.
    pub warnings: Vec<String>,
}

/// Shape problem of the mapped boxes for a layout.
pub fn problem(input: &InputBoxes, layout: Layout, strides: &[u32]) -> ShapeProblem {
    let (w, h) = input.wh();
    match layout {
        Layout::Fpn => ShapeProblem::new(w, h, Some(strides)),
        Layout::Free => ShapeProblem::new(w, h, None),
    }
}

/// Priors of explicit shapes in a layout (center offset 0.5 = mmdet `YOLOAnchorGenerator`, the
/// only mmdet generator that takes explicit per-level shapes).
pub fn explicit_prior(shapes: &[[f64; 2]], layout: Layout, strides: &[u32]) -> Result<PriorSpec> {
    Ok(PriorSpec::ExplicitAnchors {
        per_level: AnchorSet::layout_shapes(shapes, layout, strides)?,
        center_offset: 0.5,
    })
}

fn to_f64(s: &[[f32; 2]]) -> Vec<[f64; 2]> {
    s.iter().map(|v| [v[0] as f64, v[1] as f64]).collect()
}

/// What one method found: shapes (layout units), their priors, the method's objective (name,
/// value), details, and the mmdet generator when it is not derived from the priors.
type Found = (
    Vec<[f64; 2]>,
    PriorSpec,
    (String, f64),
    serde_json::Value,
    Option<MmdetAnchorGenerator>,
);

/// [`Found`] for free shapes, which become explicit priors in the layout.
fn found_shapes(
    shapes: &[[f32; 2]],
    o: &OptimizeOptions,
    objective: &str,
    value: f64,
    details: serde_json::Value,
) -> Result<Found> {
    let shapes = to_f64(shapes);
    let prior = explicit_prior(&shapes, o.layout, &o.strides)?;
    Ok((shapes, prior, (objective.to_string(), value), details, None))
}

/// Number of distinct box shapes (w, h) of the mapped boxes.
pub fn distinct_shapes(input: &InputBoxes) -> usize {
    let (w, h) = input.wh();
    let set: std::collections::HashSet<(u32, u32)> = w
        .iter()
        .zip(&h)
        .map(|(a, b)| (a.to_bits(), b.to_bits()))
        .collect();
    set.len()
}

/// Run the chosen optimizer.
///
/// Errors: [`Error::InvalidInput`] when there are no boxes, k is 0, k is larger than the number
/// of distinct box shapes (kmeans, evolve, learned: k shapes cannot be fitted to fewer boxes),
/// or the layout / method cannot hold k (`de` needs k = (2m + 1) x S with S = 3 when k is a
/// multiple of 3, else S = 1, and the fpn layout).
pub fn optimize(input: &InputBoxes, o: &OptimizeOptions) -> Result<Optimized> {
    if input.is_empty() {
        return Err(Error::InvalidInput("the dataset has no boxes".into()));
    }
    if o.k == 0 {
        return Err(Error::InvalidInput("--k must be at least 1".into()));
    }
    let distinct = distinct_shapes(input);
    if o.k > distinct && o.method != Method::De {
        return Err(Error::InvalidInput(format!(
            "--k {} is more than the {distinct} distinct box shape(s) of the dataset ({} boxes); \
             {:?} cannot place more shapes than there are boxes: use --k {distinct} or fewer",
            o.k,
            input.len(),
            o.method
        )));
    }
    if o.layout == Layout::Free {
        // fail early, before spending time
        AnchorSet::layout_shapes(&vec![[1.0, 1.0]; o.k], o.layout, &o.strides)?;
    }
    let mut warnings = vec![];
    if o.k > distinct {
        warnings.push(format!(
            "k = {} is more than the {distinct} distinct box shape(s) of the dataset",
            o.k
        ));
    }
    let p = problem(input, o.layout, &o.strides);
    let t = Instant::now();
    let iters = |d: usize| if o.iterations == 0 { d } else { o.iterations };
    let (shapes, prior, objective, details, generator): Found = match o.method {
        Method::Kmeans => {
            let cfg = KmeansConfig {
                k: o.k,
                restarts: o.restarts,
                polish: o.polish,
                seed: o.seed,
                ..KmeansConfig::default()
            };
            let r = kmeans(&p, &cfg);
            let details = serde_json::json!({
                "restarts": r.restarts,
                "lloyd_iterations": r.iterations,
                "mean_iou_before_polish": r.mean_iou_lloyd,
            });
            found_shapes(&r.shapes, o, "mean_best_iou", r.mean_iou, details)?
        }
        Method::Evolve => {
            let min_side = match o.layout {
                Layout::Fpn => 2.0 / *o.strides.iter().min().unwrap_or(&1) as f32,
                Layout::Free => 2.0,
            };
            let cfg = EvolveConfig {
                k: o.k,
                generations: iters(1000),
                seed: o.seed,
                min_side,
                progress: o.progress.clone(),
                polish: o.polish,
                ..EvolveConfig::default()
            };
            let r = evolve(&p, &cfg);
            let details = serde_json::json!({
                "generations": r.generations, "accepted": r.accepted,
                "fitness_kmeans": r.fitness_kmeans, "fitness_evolved": r.fitness_evolved,
                "polish_moves": r.polish_moves, "bpr": r.bpr, "aat": r.aat,
            });
            found_shapes(&r.shapes, o, "yolov5_fitness", r.fitness, details)?
        }
        Method::De => {
            if o.layout != Layout::Fpn {
                return Err(Error::InvalidInput(
                    "--method de optimizes the RetinaNet ratios x scales and needs --layout fpn"
                        .into(),
                ));
            }
            let (nr, ns) = if o.k.is_multiple_of(3) {
                (o.k / 3, 3)
            } else {
                (o.k, 1)
            };
            if nr.is_multiple_of(2) {
                return Err(Error::InvalidInput(format!(
                    "--method de: k = {} must be (2m + 1) x S ratios x scales (e.g. 9 = 3 x 3, 3, 5, 15)",
                    o.k
                )));
            }
            let cfg = DeConfig {
                ratio_pairs: (nr - 1) / 2,
                scales: ns,
                max_generations: iters(1000),
                seed: o.seed,
                progress: o.progress.clone(),
                polish: o.polish,
                ..DeConfig::default()
            };
            let r = de(&p, &cfg);
            warnings.extend(super::de::on_bounds(&r));
            let abs_scales: Vec<f64> = r.scales.iter().map(|s| s * cfg.octave_base_scale).collect();
            let mg = MmdetAnchorGenerator::Anchor {
                strides: o.strides.clone(),
                ratios: r.ratios.clone(),
                octave: None,
                scales: Some(abs_scales),
            };
            let shapes = to_f64(&product_shapes(&r.ratios, &r.scales, cfg.octave_base_scale));
            (
                shapes,
                mg.prior_spec(),
                ("zlocha_focal".to_string(), r.value),
                serde_json::to_value(&r).unwrap_or_default(),
                Some(mg),
            )
        }
        Method::Learned => {
            let cfg = LearnedConfig {
                k: o.k,
                init: o.init,
                iterations: iters(600),
                seed: o.seed,
                progress: o.progress.clone(),
                ..LearnedConfig::default()
            };
            let r = learned(&p, &cfg);
            if r.kept_init {
                warnings.push(format!(
                    "--method learned did not improve its {:?} initialization (log-space loss \
                     {:.4}); the result is that initialization",
                    r.init, r.loc_loss_init
                ));
            }
            let details = serde_json::json!({
                "init": r.init, "iterations": r.iterations, "loc_loss_init": r.loc_loss_init,
                "mean_iou": r.mean_iou, "mean_iou_init": r.mean_iou_init,
            });
            found_shapes(&r.shapes, o, "log_space_loc_loss", r.loc_loss, details)?
        }
    };
    let seconds = t.elapsed().as_secs_f64();
    let generator = match generator {
        Some(g) => g,
        None => MmdetAnchorGenerator::from_prior(&prior, &o.strides)?,
    };
    Ok(Optimized {
        method: o.method,
        layout: o.layout,
        seed: o.seed,
        shapes,
        prior,
        objective,
        seconds,
        details,
        mmdet: generator.to_python(),
        warnings,
    })
}

/// Warnings from comparing the optimized anchors with the default ones on the grid: the
/// optimized set has a lower recall at IoU >= 0.5 or a lower mean best IoU than the defaults.
pub fn compare_warnings(default: &SetReport, optimized: &SetReport) -> Vec<String> {
    let (d, o) = (&default.grid, &optimized.grid);
    if o.recall50 < d.recall50 || o.mean_best_iou < d.mean_best_iou {
        vec![format!(
            "the optimized anchors are worse than the default anchors on this dataset (grid \
             recall at IoU >= 0.5: {:.1}% -> {:.1}%, mean best IoU {:.3} -> {:.3}); keep the \
             defaults or try another --method",
            100.0 * d.recall50,
            100.0 * o.recall50,
            d.mean_best_iou,
            o.mean_best_iou
        )]
    } else {
        vec![]
    }
}

/// Everything measured for one anchor set.
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    pub name: String,
    pub prior: PriorSpec,
    pub strides: Vec<u32>,
    /// Anchors per location.
    pub num_anchors: usize,
    /// Shape-only scores against all anchors of all levels (absolute sizes).
    pub shape: ShapeScores,
    /// Grid statistics over all gts.
    pub grid: GridSummary,
    /// Grid statistics per class (class name, summary).
    pub per_class: Vec<(String, GridSummary)>,
}

/// Evaluate an anchor set on the mapped dataset.
///
/// Errors: [`Error::InvalidInput`] for priors that do not fit the strides.
pub fn evaluate(
    input: &InputBoxes,
    name: &str,
    prior: &PriorSpec,
    strides: &[u32],
    cfg: &GridConfig,
) -> Result<SetReport> {
    let set = AnchorSet::from_spec(prior, strides)?;
    let mut all: Vec<[f32; 2]> = Vec::new();
    for l in 0..strides.len() {
        all.extend(set.shapes(l));
    }
    let (w, h) = input.wh();
    let shape = ShapeProblem::new(w, h, None).scores(&all, 4.0);
    let res = eval_all(&input.images, &set, cfg);
    let grid = GridSummary::of(&res);
    let per_class = input
        .classes
        .iter()
        .enumerate()
        .filter_map(|(c, n)| {
            let r: Vec<_> = res
                .iter()
                .filter(|g| g.class_id as usize == c)
                .copied()
                .collect();
            (!r.is_empty()).then(|| (n.clone(), GridSummary::of(&r)))
        })
        .collect();
    Ok(SetReport {
        name: name.to_string(),
        prior: prior.clone(),
        strides: strides.to_vec(),
        num_anchors: set.num_anchors(),
        shape,
        grid,
        per_class,
    })
}
