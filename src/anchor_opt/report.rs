//! Text table of a default-vs-optimized comparison.

use super::assign::{GridSummary, PosStats};
use super::run::{Assigner, SetReport};
use std::fmt::Write;

fn pos(p: &PosStats) -> String {
    format!("{:.2} ± {:.2}", p.mean, p.std)
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// Side-by-side table of anchor sets (columns) and metrics (rows), then the per-class share of
/// gts without a positive under the chosen assigner.
pub fn table(sets: &[&SetReport], assigner: Assigner) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |name: &str, f: &dyn Fn(&SetReport) -> String| {
        rows.push((name.to_string(), sets.iter().map(|s| f(s)).collect()));
    };
    add("anchors per location (A)", &|s| s.num_anchors.to_string());
    add("shape: mean best IoU", &|s| {
        format!("{:.4}", s.shape.mean_iou)
    });
    add("shape: BPR (YOLOv5, thr 4)", &|s| {
        format!("{:.4}", s.shape.bpr)
    });
    add("shape: anchors above thr", &|s| {
        format!("{:.2}", s.shape.aat)
    });
    add("shape: focal objective", &|s| {
        format!("{:.4}", s.shape.focal)
    });
    add("grid: mean best IoU", &|s| {
        format!("{:.4}", s.grid.mean_best_iou)
    });
    add("grid: recall IoU>=0.5", &|s| pct(s.grid.recall50));
    add("ATSS positives / gt", &|s| pos(&s.grid.atss));
    add("ATSS gts without positive", &|s| pct(s.grid.atss.no_pos));
    add("max-IoU positives / gt", &|s| pos(&s.grid.maxiou));
    add("max-IoU gts w/o IoU>=0.5 pos", &|s| {
        pct(s.grid.maxiou_hq.no_pos)
    });
    add("max-IoU gts without positive", &|s| {
        pct(s.grid.maxiou.no_pos)
    });
    add("FreeAnchor bag mean IoU (50)", &|s| {
        format!("{:.4}", s.grid.bag_iou)
    });
    add("Pseudo-IoU positives / gt", &|s| pos(&s.grid.piou));
    add("Pseudo-IoU gts without pos.", &|s| pct(s.grid.piou.no_pos));
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let wc: Vec<usize> = (0..sets.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(sets[i].name.len())
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:w0$}", "metric");
    for (i, s) in sets.iter().enumerate() {
        let _ = write!(out, "  {:>w$}", s.name, w = wc[i]);
    }
    out.push('\n');
    for (name, vals) in &rows {
        let _ = write!(out, "{name:w0$}");
        for (i, v) in vals.iter().enumerate() {
            let _ = write!(out, "  {:>w$}", v, w = wc[i]);
        }
        out.push('\n');
    }
    // per class, for the chosen assigner
    let (label, f): (&str, fn(&GridSummary) -> String) = match assigner {
        Assigner::Atss => ("ATSS no-positive", |g| {
            format!("{} ({:.2})", pct(g.atss.no_pos), g.atss.mean)
        }),
        Assigner::MaxIou => ("max-IoU no IoU>=0.5 positive", |g| {
            format!("{} ({:.2})", pct(g.maxiou_hq.no_pos), g.maxiou.mean)
        }),
        Assigner::Freeanchor => ("FreeAnchor bag mean IoU", |g| format!("{:.4}", g.bag_iou)),
        Assigner::PseudoIou => ("Pseudo-IoU no-positive", |g| {
            format!("{} ({:.2})", pct(g.piou.no_pos), g.piou.mean)
        }),
    };
    if let Some(first) = sets.first() {
        let _ = writeln!(out, "\nper class: {label} (mean positives)");
        for (ci, (cname, g)) in first.per_class.iter().enumerate() {
            let _ = write!(out, "{:w0$}", format!("{cname} (n={})", g.num_gts));
            for (i, s) in sets.iter().enumerate() {
                let v = s.per_class.get(ci).map(|c| f(&c.1)).unwrap_or_default();
                let _ = write!(out, "  {:>w$}", v, w = wc[i]);
            }
            out.push('\n');
        }
    }
    out
}
