//! Where the nodes really ran: ONNX Runtime's profile (`SessionOptions::EnableProfiling`, a
//! Chrome trace JSON array written by `end_profiling`) read node by node, and each node run
//! outside the requested execution provider classified as deliberate or as a fallback.
//!
//! ONNX Runtime places some nodes on the CPU on purpose even when a GPU provider is requested:
//! the small integer subgraphs that compute shapes (`Shape`, then `Gather` / `Unsqueeze` /
//! `Concat` / `Slice` on int64 tensors), which feed other nodes' shape inputs and would cost a
//! device round trip on the GPU (onnxruntime `core/framework/fallback_cpu_capability.cc`,
//! `GetCpuPreferredNodes`), and the `MemcpyToHost` / `MemcpyFromHost` nodes it inserts at
//! provider boundaries. Those are listed, not failed; a node computing float data on another
//! provider is a fallback the requested provider could have run.
//!
//! Profile node events look like (one per node run, `name` ending in `_kernel_time`):
//! `{"cat":"Node","dur":12,"name":"/Shape_kernel_time","args":{"op_name":"Shape",
//! "provider":"CPUExecutionProvider","output_type_shape":[{"int64":[4]}],...}}`.

use crate::bench::EpShare;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One node run from the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRun {
    /// Provider that ran it (e.g. `CPUExecutionProvider`).
    pub provider: String,
    /// ONNX op type (`args.op_name`), e.g. `Conv`; empty when the profile has none.
    pub op: String,
    /// Kernel time, microseconds.
    pub dur_us: u64,
    /// Element types of the outputs (`args.output_type_shape` keys, e.g. `["int64"]`);
    /// empty when the profile does not record them.
    pub output_types: Vec<String>,
}

/// Why a node ran where it did, relative to the requested provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// On the requested provider (or, for TensorRT, on the CUDA provider registered after it
    /// for the nodes TensorRT does not take).
    Requested,
    /// A shape computation ONNX Runtime keeps on the CPU on purpose (`Shape`, `Size`, or a node
    /// whose outputs are all integer tensors).
    ShapeOnCpu,
    /// A copy node ONNX Runtime inserts between providers.
    Memcpy,
    /// Float work on another provider: the requested provider could have run it.
    Fallback,
}

/// Node runs of one op type on one provider outside the requested provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpCount {
    /// Provider that ran them.
    pub provider: String,
    /// ONNX op type.
    pub op: String,
    /// Classification.
    pub placement: Placement,
    /// Number of node runs.
    pub count: u64,
    /// Summed kernel time, microseconds.
    pub time_us: u64,
}

/// A profile summarized against the requested provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSummary {
    /// Node time per provider, largest first.
    pub shares: Vec<EpShare>,
    /// Node runs outside the requested provider, by provider and op type (fallbacks first).
    pub elsewhere: Vec<OpCount>,
}

/// Reads the node runs (`cat == "Node"`, name ending in `_kernel_time`, with a provider).
///
/// Errors: [`Error::Io`]; [`Error::Runtime`] naming the file if it is not a profile array or
/// has no node events.
pub fn read_profile(path: &Path) -> Result<Vec<NodeRun>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Runtime(format!("{}: not a profile: {e}", path.display())))?;
    let events = v
        .as_array()
        .ok_or_else(|| Error::Runtime(format!("{}: profile is not an array", path.display())))?;
    let mut runs = vec![];
    for e in events {
        if e.get("cat").and_then(|c| c.as_str()) != Some("Node") {
            continue;
        }
        let name = e.get("name").and_then(|n| n.as_str()).unwrap_or("");
        if !name.ends_with("_kernel_time") {
            continue;
        }
        let args = e.get("args");
        let Some(provider) = args
            .and_then(|a| a.get("provider"))
            .and_then(|p| p.as_str())
        else {
            continue;
        };
        let op = args
            .and_then(|a| a.get("op_name"))
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string();
        let output_types = args
            .and_then(|a| a.get("output_type_shape"))
            .and_then(|o| o.as_array())
            .map(|outs| {
                outs.iter()
                    .filter_map(|o| o.as_object())
                    .flat_map(|o| o.keys().cloned())
                    .collect()
            })
            .unwrap_or_default();
        runs.push(NodeRun {
            provider: provider.to_string(),
            op,
            dur_us: e.get("dur").and_then(|d| d.as_u64()).unwrap_or(0),
            output_types,
        });
    }
    if runs.is_empty() {
        return Err(Error::Runtime(format!(
            "{}: the profile has no node events",
            path.display()
        )));
    }
    Ok(runs)
}

/// Classifies one node run against the `requested` provider (ONNX Runtime name).
pub fn classify(requested: &str, run: &NodeRun) -> Placement {
    let companion =
        requested == "TensorrtExecutionProvider" && run.provider == "CUDAExecutionProvider";
    if run.provider == requested || companion {
        return Placement::Requested;
    }
    if run.op.starts_with("Memcpy") {
        return Placement::Memcpy;
    }
    let integer = |t: &String| matches!(t.as_str(), "int64" | "int32" | "uint64" | "uint32");
    let cpu = run.provider == "CPUExecutionProvider";
    if cpu
        && (matches!(run.op.as_str(), "Shape" | "Size")
            || (!run.output_types.is_empty() && run.output_types.iter().all(integer)))
    {
        return Placement::ShapeOnCpu;
    }
    Placement::Fallback
}

/// Node time per provider and the runs outside `requested`, by op type.
pub fn summarize(requested: &str, runs: &[NodeRun]) -> ProfileSummary {
    let mut acc: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut ops: BTreeMap<(Placement, &str, &str), (u64, u64)> = BTreeMap::new();
    for r in runs {
        let e = acc.entry(&r.provider).or_default();
        e.0 += 1;
        e.1 += r.dur_us;
        let p = classify(requested, r);
        if p != Placement::Requested {
            let e = ops.entry((p, &r.provider, &r.op)).or_default();
            e.0 += 1;
            e.1 += r.dur_us;
        }
    }
    let total: u64 = acc.values().map(|v| v.1).sum();
    let mut shares: Vec<EpShare> = acc
        .into_iter()
        .map(|(provider, (nodes, time_us))| EpShare {
            provider: provider.to_string(),
            nodes,
            time_us,
            share: if total > 0 {
                time_us as f64 / total as f64
            } else {
                0.0
            },
        })
        .collect();
    shares.sort_by(|a, b| b.time_us.cmp(&a.time_us).then(a.provider.cmp(&b.provider)));
    let mut elsewhere: Vec<OpCount> = ops
        .into_iter()
        .map(|((placement, provider, op), (count, time_us))| OpCount {
            provider: provider.to_string(),
            op: op.to_string(),
            placement,
            count,
            time_us,
        })
        .collect();
    elsewhere.sort_by(|a, b| {
        (b.placement == Placement::Fallback)
            .cmp(&(a.placement == Placement::Fallback))
            .then(a.placement.cmp(&b.placement))
            .then(b.count.cmp(&a.count))
            .then(a.op.cmp(&b.op))
    });
    ProfileSummary { shares, elsewhere }
}

impl ProfileSummary {
    /// Node runs classified as [`Placement::Fallback`].
    pub fn fallback_runs(&self) -> u64 {
        self.elsewhere
            .iter()
            .filter(|o| o.placement == Placement::Fallback)
            .map(|o| o.count)
            .sum()
    }

    /// One line per placement outside the requested provider, e.g.
    /// `deliberate CPU shape nodes: 42 runs (Shape x24, Gather x6, ...)`; empty when every
    /// node ran on the requested provider.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (p, what) in [
            (
                Placement::Fallback,
                "FALLBACK (float work off the requested provider)",
            ),
            (Placement::ShapeOnCpu, "deliberate CPU shape nodes"),
            (Placement::Memcpy, "provider-boundary copies"),
        ] {
            let v: Vec<&OpCount> = self.elsewhere.iter().filter(|o| o.placement == p).collect();
            if v.is_empty() {
                continue;
            }
            let n: u64 = v.iter().map(|o| o.count).sum();
            let t: u64 = v.iter().map(|o| o.time_us).sum();
            let parts: Vec<String> = v
                .iter()
                .map(|o| format!("{} x{} on {}", o.op, o.count, o.provider))
                .collect();
            s.push_str(&format!(
                "{what}: {n} node runs, {t} us ({})\n",
                parts.join(", ")
            ));
        }
        s
    }

    /// With `strict`, an error when any node run is a [`Placement::Fallback`] (a GPU provider
    /// requested); deliberate CPU shape nodes and copies never fail.
    ///
    /// Errors: [`Error::ExecutionProvider`] naming the op types and counts that fell back.
    pub fn check(&self, requested: &str, strict: bool) -> Result<()> {
        if !strict || requested == "CPUExecutionProvider" {
            return Ok(());
        }
        let fb: Vec<String> = self
            .elsewhere
            .iter()
            .filter(|o| o.placement == Placement::Fallback)
            .map(|o| format!("{} x{} on {}", o.op, o.count, o.provider))
            .collect();
        if fb.is_empty() {
            return Ok(());
        }
        let total: u64 = self.shares.iter().map(|s| s.time_us).sum();
        let t: u64 = self
            .elsewhere
            .iter()
            .filter(|o| o.placement == Placement::Fallback)
            .map(|o| o.time_us)
            .sum();
        Err(Error::ExecutionProvider {
            ep: requested.to_string(),
            msg: format!(
                "{} node runs ({:.1}% of node time) that {requested} could have run ran \
                 elsewhere: {} (--strict-ep)",
                self.fallback_runs(),
                100.0 * t as f64 / total.max(1) as f64,
                fb.join(", ")
            ),
        })
    }
}

/// [`read_profile`] + [`summarize`].
///
/// Errors: as [`read_profile`].
pub fn summarize_file(path: &Path, requested: &str) -> Result<ProfileSummary> {
    Ok(summarize(requested, &read_profile(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/profiles")
            .join(name)
    }

    /// A real profile written by ONNX Runtime's CPU provider (bccd_atss, one run).
    #[test]
    fn real_cpu_profile_is_all_requested() {
        let runs = read_profile(&fixture("cpu_bccd_atss.json")).unwrap();
        assert!(runs.iter().all(|r| r.provider == "CPUExecutionProvider"));
        let shapes = runs.iter().filter(|r| r.op == "Shape").count();
        assert!(shapes > 0, "the fixture holds Shape nodes");
        let s = summarize("CPUExecutionProvider", &runs);
        assert!(s.elsewhere.is_empty());
        assert_eq!(s.shares.len(), 1);
        assert_eq!(s.shares[0].nodes, runs.len() as u64);
        // the same file read as if CUDA had been requested: the int64 shape nodes are
        // deliberate, every float node (Conv, Relu, ...) a fallback
        let c = summarize("CUDAExecutionProvider", &runs);
        let shape_runs: u64 = c
            .elsewhere
            .iter()
            .filter(|o| o.placement == Placement::ShapeOnCpu)
            .map(|o| o.count)
            .sum();
        let conv = c.elsewhere.iter().find(|o| o.op == "Conv").unwrap();
        assert_eq!(conv.placement, Placement::Fallback);
        assert!(shape_runs >= shapes as u64);
        assert_eq!(shape_runs + c.fallback_runs(), runs.len() as u64);
        assert!(c.check("CUDAExecutionProvider", true).is_err());
    }

    /// CUDA run with ONNX Runtime's deliberate CPU shape nodes (42 runs over 3 inferences)
    /// and boundary copies: listed, not failed.
    #[test]
    fn cuda_profile_with_cpu_shape_nodes_passes_strict() {
        let runs = read_profile(&fixture("cuda_shape_nodes.json")).unwrap();
        let s = summarize("CUDAExecutionProvider", &runs);
        let cpu = s
            .shares
            .iter()
            .find(|e| e.provider == "CPUExecutionProvider")
            .unwrap();
        assert_eq!(cpu.nodes, 42);
        assert_eq!(s.fallback_runs(), 0);
        let by = |op: &str| s.elsewhere.iter().find(|o| o.op == op).unwrap();
        assert_eq!(by("Shape").placement, Placement::ShapeOnCpu);
        assert_eq!(by("Gather").placement, Placement::ShapeOnCpu);
        assert_eq!(by("Concat").placement, Placement::ShapeOnCpu);
        // ONNX Runtime runs its boundary copies as CUDA kernels
        assert!(s.elsewhere.iter().all(|o| !o.op.starts_with("Memcpy")));
        s.check("CUDAExecutionProvider", true).unwrap();
        let d = s.describe();
        assert!(
            d.contains("deliberate CPU shape nodes: 42 node runs"),
            "{d}"
        );
        assert!(d.contains("Shape x"), "{d}");
        assert!(!d.contains("FALLBACK"), "{d}");
    }

    /// The same run with the float `Resize` nodes (2 per run) on the CPU: strict fails naming it.
    #[test]
    fn cuda_profile_with_float_fallback_fails_strict() {
        let runs = read_profile(&fixture("cuda_fallback.json")).unwrap();
        let s = summarize("CUDAExecutionProvider", &runs);
        assert_eq!(s.fallback_runs(), 6);
        let e = s
            .check("CUDAExecutionProvider", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Resize x6 on CPUExecutionProvider"), "{e}");
        assert!(!e.contains("Shape"), "{e}");
        assert!(s.check("CUDAExecutionProvider", false).is_ok());
        // TensorRT: the CUDA provider's nodes are its registered companion, not fallbacks
        let t = summarize("TensorrtExecutionProvider", &runs);
        assert!(
            t.elsewhere
                .iter()
                .all(|o| o.provider != "CUDAExecutionProvider")
        );
    }

    #[test]
    fn classification_rules() {
        let run = |provider: &str, op: &str, types: &[&str]| NodeRun {
            provider: provider.into(),
            op: op.into(),
            dur_us: 1,
            output_types: types.iter().map(|s| s.to_string()).collect(),
        };
        let c = "CUDAExecutionProvider";
        assert_eq!(
            classify(c, &run(c, "Conv", &["float"])),
            Placement::Requested
        );
        let cpu = "CPUExecutionProvider";
        assert_eq!(classify(c, &run(cpu, "Shape", &[])), Placement::ShapeOnCpu);
        assert_eq!(
            classify(c, &run(cpu, "Concat", &["int64"])),
            Placement::ShapeOnCpu
        );
        assert_eq!(
            classify(c, &run(cpu, "Concat", &["float"])),
            Placement::Fallback
        );
        // unknown output types: only Shape / Size are known to be shape nodes
        assert_eq!(classify(c, &run(cpu, "Gather", &[])), Placement::Fallback);
        assert_eq!(
            classify(c, &run(c, "MemcpyToHost", &["float"])),
            Placement::Requested
        );
        assert_eq!(
            classify(c, &run(cpu, "MemcpyToHost", &["float"])),
            Placement::Memcpy
        );
    }
}
