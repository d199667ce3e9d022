//! The numeric precision an ONNX model computes in (FP32, FP16, INT8 with QuantizeLinear /
//! DequantizeLinear pairs, INT8 with QLinear operators), read from the model file itself:
//! ONNX Runtime's API does not list a session's nodes, so the main graph's node op types and
//! initializer data types are read straight from the protobuf (`onnx/onnx.proto`:
//! `ModelProto.graph` = field 7; `GraphProto.node` = 1, `.initializer` = 5; `NodeProto.op_type`
//! = 4; `TensorProto.data_type` = 2, with `TensorProto.DataType` FLOAT = 1, INT8 = 3,
//! UINT8 = 2, FLOAT16 = 10, BFLOAT16 = 16). Subgraphs (If/Loop bodies) and functions are not
//! counted.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What a model mostly computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Float32 weights and compute.
    Fp32,
    /// Float16 (or bfloat16) weights: more 16-bit than 32-bit float initializers.
    Fp16,
    /// INT8 in QDQ format (`QuantizeLinear` / `DequantizeLinear` around float ops, which
    /// ONNX Runtime fuses into integer kernels).
    Int8Qdq,
    /// INT8 in operator format (`QLinearConv`, `ConvInteger`, `MatMulInteger`, ...).
    Int8QOperator,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "FP32",
            Precision::Fp16 => "FP16",
            Precision::Int8Qdq => "INT8 (QDQ)",
            Precision::Int8QOperator => "INT8 (QOperator)",
        })
    }
}

/// Node and initializer counts of a model's main graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphSummary {
    /// Nodes per op type.
    pub ops: BTreeMap<String, usize>,
    /// Initializers per ONNX `TensorProto.DataType` code.
    pub initializer_types: BTreeMap<i32, usize>,
}

const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const BFLOAT16: i32 = 16;

impl GraphSummary {
    /// Number of nodes of `op`.
    pub fn count(&self, op: &str) -> usize {
        self.ops.get(op).copied().unwrap_or(0)
    }

    /// Total node count.
    pub fn nodes(&self) -> usize {
        self.ops.values().sum()
    }

    /// `QuantizeLinear` plus `DequantizeLinear` nodes.
    pub fn qdq_nodes(&self) -> usize {
        self.count("QuantizeLinear") + self.count("DequantizeLinear")
    }

    /// Integer operator-format nodes (`QLinear*`, `*Integer`).
    pub fn qoperator_nodes(&self) -> usize {
        self.ops
            .iter()
            .filter(|(k, _)| k.starts_with("QLinear") || k.ends_with("Integer"))
            .map(|(_, v)| v)
            .sum()
    }

    /// The model's precision: INT8 if it has QDQ pairs or integer operators, else FP16 if it
    /// holds more 16-bit than 32-bit float initializers, else FP32.
    pub fn precision(&self) -> Precision {
        let ty = |t: i32| self.initializer_types.get(&t).copied().unwrap_or(0);
        if self.qdq_nodes() > 0 {
            Precision::Int8Qdq
        } else if self.qoperator_nodes() > 0 {
            Precision::Int8QOperator
        } else if ty(FLOAT16) + ty(BFLOAT16) > ty(FLOAT) {
            Precision::Fp16
        } else {
            Precision::Fp32
        }
    }

    /// One line for `inspect` / `bench`, e.g. `INT8 (QDQ): 103 QuantizeLinear + 170
    /// DequantizeLinear of 548 nodes`.
    pub fn describe(&self) -> String {
        let p = self.precision();
        match p {
            Precision::Int8Qdq => format!(
                "{p}: quantized, {} QDQ nodes ({} QuantizeLinear + {} DequantizeLinear) of {} nodes",
                self.qdq_nodes(),
                self.count("QuantizeLinear"),
                self.count("DequantizeLinear"),
                self.nodes()
            ),
            Precision::Int8QOperator => format!(
                "{p}: quantized, {} integer operators of {} nodes",
                self.qoperator_nodes(),
                self.nodes()
            ),
            Precision::Fp16 => format!(
                "{p}: {} of {} initializers are 16-bit floats, {} Cast nodes",
                self.initializer_types.get(&FLOAT16).copied().unwrap_or(0)
                    + self.initializer_types.get(&BFLOAT16).copied().unwrap_or(0),
                self.initializer_types.values().sum::<usize>(),
                self.count("Cast")
            ),
            Precision::Fp32 => format!("{p}: not quantized, {} nodes", self.nodes()),
        }
    }
}

/// Reads the main-graph summary of the ONNX file at `path`.
///
/// Errors: [`Error::Io`], or [`Error::Model`] naming the file if it is not a protobuf
/// `ModelProto` with a graph.
pub fn read(path: &Path) -> Result<GraphSummary> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|msg| Error::Model {
        path: path.to_path_buf(),
        msg,
    })
}

/// Parses a serialized `ModelProto`; the error says what is malformed.
pub fn parse(model: &[u8]) -> std::result::Result<GraphSummary, String> {
    let mut graph = None;
    for f in Fields::new(model) {
        if let (7, Value::Bytes(b)) = f? {
            graph = Some(b);
        }
    }
    let graph = graph.ok_or("not an ONNX model (no graph)")?;
    let mut s = GraphSummary::default();
    for f in Fields::new(graph) {
        match f? {
            (1, Value::Bytes(node)) => {
                let mut op = None;
                for g in Fields::new(node) {
                    if let (4, Value::Bytes(b)) = g? {
                        op = Some(String::from_utf8_lossy(b).into_owned());
                    }
                }
                *s.ops.entry(op.unwrap_or_default()).or_default() += 1;
            }
            (5, Value::Bytes(tensor)) => {
                let mut ty = 0i32;
                for g in Fields::new(tensor) {
                    if let (2, Value::Varint(v)) = g? {
                        ty = v as i32;
                    }
                }
                *s.initializer_types.entry(ty).or_default() += 1;
            }
            _ => {}
        }
    }
    Ok(s)
}

/// A protobuf field value (wire types 0, 1, 2, 5).
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterator over the `(field number, value)` pairs of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields {
            buf,
            pos: 0,
            failed: false,
        }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes at byte {} runs past the end", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn field(&mut self) -> std::result::Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let num = key >> 3;
        let v = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(usize::try_from(n).map_err(|_| "length overflow")?)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            w => return Err(format!("unsupported wire type {w} (field {num})")),
        };
        if num == 0 {
            return Err("field number 0".into());
        }
        Ok((num, v))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = std::result::Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.field();
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(num: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn node(op: &str) -> Vec<u8> {
        let mut n = Vec::new();
        bytes_field(1, b"x", &mut n); // input
        bytes_field(4, op.as_bytes(), &mut n);
        n
    }

    fn tensor(ty: u64) -> Vec<u8> {
        let mut t = Vec::new();
        varint(8, &mut t); // dims (field 1, varint) = 3
        varint(3, &mut t);
        varint(2 << 3, &mut t);
        varint(ty, &mut t);
        t
    }

    fn model(ops: &[&str], inits: &[u64]) -> Vec<u8> {
        let mut g = Vec::new();
        for op in ops {
            bytes_field(1, &node(op), &mut g);
        }
        for &t in inits {
            bytes_field(5, &tensor(t), &mut g);
        }
        let mut m = Vec::new();
        varint(1 << 3, &mut m); // ir_version
        varint(8, &mut m);
        varint(5 << 3 | 1, &mut m); // a fixed64 field is skipped
        m.extend_from_slice(&[0; 8]);
        bytes_field(7, &g, &mut m);
        m
    }

    #[test]
    fn precision_from_ops_and_initializers() {
        let q = parse(&model(
            &[
                "QuantizeLinear",
                "DequantizeLinear",
                "DequantizeLinear",
                "Conv",
            ],
            &[3, 1],
        ))
        .unwrap();
        assert_eq!(q.precision(), Precision::Int8Qdq);
        assert_eq!(q.qdq_nodes(), 3);
        assert_eq!(q.nodes(), 4);
        assert!(q.describe().contains("3 QDQ nodes"), "{}", q.describe());
        let h = parse(&model(&["Cast", "Conv", "Cast"], &[10, 10, 1])).unwrap();
        assert_eq!(h.precision(), Precision::Fp16);
        let f = parse(&model(&["Conv", "Relu"], &[1, 1, 10])).unwrap();
        assert_eq!(f.precision(), Precision::Fp32);
        let o = parse(&model(&["QLinearConv"], &[3])).unwrap();
        assert_eq!(o.precision(), Precision::Int8QOperator);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let m = model(&["Conv"], &[1]);
        assert!(parse(&m[..m.len() - 3]).is_err());
        assert!(parse(b"not a model").is_err());
        assert!(parse(&[]).unwrap_err().contains("no graph"));
    }
}
