//! mmdetection `anchor_generator` config snippets: written for an optimized set and parsed back
//! (round trip tested). Two generator types exist in mmdet (`mmdet/core/anchor/
//! anchor_generator.py`):
//!
//! - `AnchorGenerator(strides, ratios, octave_base_scale, scales_per_octave)` or with an explicit
//!   `scales` list (then `octave_base_scale` must be absent), centre offset 0: ratios x scales
//!   products, as the default and the `de` method produce;
//! - `YOLOAnchorGenerator(strides, base_sizes)`: explicit `(w, h)` per level, centred at
//!   `stride / 2` (centre offset 0.5), for free shapes (`kmeans`, `evolve`, `learned`).

use super::anchors::AnchorSet;
use crate::error::{Error, Result};
use crate::spec::PriorSpec;
use serde::Serialize;

/// An mmdet anchor generator config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MmdetAnchorGenerator {
    /// `type='AnchorGenerator'`.
    Anchor {
        strides: Vec<u32>,
        ratios: Vec<f64>,
        /// `octave_base_scale` and `scales_per_octave`, or
        octave: Option<(f64, u32)>,
        /// an explicit `scales` list (absolute, i.e. already times the base scale).
        scales: Option<Vec<f64>>,
    },
    /// `type='YOLOAnchorGenerator'`.
    Yolo {
        strides: Vec<u32>,
        base_sizes: Vec<Vec<[f64; 2]>>,
    },
}

fn py_f(v: f64) -> String {
    // shortest round-trip representation, always with a decimal point
    let s = format!("{v:?}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

fn py_list<T>(v: &[T], f: impl Fn(&T) -> String) -> String {
    format!("[{}]", v.iter().map(f).collect::<Vec<_>>().join(", "))
}

impl MmdetAnchorGenerator {
    /// The generator for a spec prior: `Anchors` -> `AnchorGenerator` with octave scales,
    /// `ExplicitAnchors` with centre offset 0.5 -> `YOLOAnchorGenerator`.
    ///
    /// Errors: [`Error::InvalidInput`] for points, or explicit anchors with another centre offset
    /// (no mmdet generator expresses them; products are written with [`Self::Anchor`] directly).
    pub fn from_prior(prior: &PriorSpec, strides: &[u32]) -> Result<Self> {
        match prior {
            PriorSpec::Anchors {
                octave_base_scale,
                scales_per_octave,
                ratios,
                center_offset,
            } if *center_offset == 0.0 => Ok(Self::Anchor {
                strides: strides.to_vec(),
                ratios: ratios.clone(),
                octave: Some((*octave_base_scale, *scales_per_octave)),
                scales: None,
            }),
            PriorSpec::ExplicitAnchors {
                per_level,
                center_offset,
            } if *center_offset == 0.5 => Ok(Self::Yolo {
                strides: strides.to_vec(),
                base_sizes: per_level.clone(),
            }),
            _ => Err(Error::InvalidInput(
                "no mmdet anchor generator expresses these priors".into(),
            )),
        }
    }

    /// The Python config text `anchor_generator=dict(...)`.
    pub fn to_python(&self) -> String {
        match self {
            Self::Anchor {
                strides,
                ratios,
                octave,
                scales,
            } => {
                let mut s = String::from("anchor_generator=dict(\n    type='AnchorGenerator',\n");
                if let Some((obs, spo)) = octave {
                    s += &format!(
                        "    octave_base_scale={},\n    scales_per_octave={spo},\n",
                        py_f(*obs)
                    );
                }
                if let Some(sc) = scales {
                    s += &format!("    scales={},\n", py_list(sc, |v| py_f(*v)));
                }
                s += &format!(
                    "    ratios={},\n    strides={})",
                    py_list(ratios, |v| py_f(*v)),
                    py_list(strides, |v| v.to_string())
                );
                s
            }
            Self::Yolo {
                strides,
                base_sizes,
            } => {
                let lv: Vec<String> = base_sizes
                    .iter()
                    .map(|l| {
                        format!(
                            "        {}",
                            py_list(l, |wh| format!("({}, {})", py_f(wh[0]), py_f(wh[1])))
                        )
                    })
                    .collect();
                format!(
                    "anchor_generator=dict(\n    type='YOLOAnchorGenerator',\n    strides={},\n    base_sizes=[\n{}])",
                    py_list(strides, |v| v.to_string()),
                    lv.join(",\n")
                )
            }
        }
    }

    /// Base anchors exactly as mmdet builds them from this config.
    pub fn anchor_set(&self) -> AnchorSet {
        match self {
            Self::Anchor {
                strides,
                ratios,
                octave,
                scales,
            } => {
                let (obs, spo) = octave.unwrap_or((1.0, 1));
                AnchorSet::mmdet(strides, obs, spo, scales.as_deref(), ratios, 0.0)
            }
            Self::Yolo {
                strides,
                base_sizes,
            } => AnchorSet::explicit(strides, base_sizes, 0.5),
        }
    }

    /// The spec priors that give the same anchors: `Anchors` for octave configs, otherwise
    /// `ExplicitAnchors` (explicit `scales` are expanded to per-level `(w, h)` from mmdet's f32
    /// values, centre offset 0; YOLO base sizes keep centre offset 0.5).
    pub fn prior_spec(&self) -> PriorSpec {
        match self {
            Self::Anchor {
                ratios,
                octave: Some((obs, spo)),
                scales: None,
                ..
            } => PriorSpec::Anchors {
                octave_base_scale: *obs,
                scales_per_octave: *spo,
                ratios: ratios.clone(),
                center_offset: 0.0,
            },
            Self::Anchor { .. } => {
                let set = self.anchor_set();
                let per_level = (0..set.strides.len())
                    .map(|l| {
                        set.base[l]
                            .iter()
                            .map(|b| [2.0 * b[2] as f64, 2.0 * b[3] as f64])
                            .collect()
                    })
                    .collect();
                PriorSpec::ExplicitAnchors {
                    per_level,
                    center_offset: 0.0,
                }
            }
            Self::Yolo { base_sizes, .. } => PriorSpec::ExplicitAnchors {
                per_level: base_sizes.clone(),
                center_offset: 0.5,
            },
        }
    }

    /// Parse `anchor_generator=dict(...)` (or just `dict(...)`) as written by [`Self::to_python`]
    /// or by hand in an mmdet config (Python literals: numbers, strings, lists, tuples).
    ///
    /// Errors: [`Error::InvalidInput`] naming the problem.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let t = t
            .strip_prefix("anchor_generator")
            .map(|r| r.trim_start().trim_start_matches('='))
            .unwrap_or(t);
        let mut p = Parser {
            s: t.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        let Py::Dict(kv) = v else {
            return Err(Error::InvalidInput("expected dict(...)".into()));
        };
        let get = |k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let ty = match get("type") {
            Some(Py::Str(s)) => s.clone(),
            _ => return Err(Error::InvalidInput("anchor_generator has no type".into())),
        };
        let strides: Vec<u32> = get("strides")
            .ok_or_else(|| Error::InvalidInput("missing strides".into()))?
            .nums()?
            .iter()
            .map(|&v| v as u32)
            .collect();
        match ty.as_str() {
            "AnchorGenerator" => {
                let ratios = get("ratios")
                    .ok_or_else(|| Error::InvalidInput("missing ratios".into()))?
                    .nums()?;
                let octave = match (get("octave_base_scale"), get("scales_per_octave")) {
                    (Some(a), Some(b)) => Some((a.num()?, b.num()? as u32)),
                    _ => None,
                };
                let scales = get("scales").map(|s| s.nums()).transpose()?;
                if octave.is_none() == scales.is_none() {
                    return Err(Error::InvalidInput(
                        "give either octave_base_scale + scales_per_octave or scales".into(),
                    ));
                }
                Ok(Self::Anchor {
                    strides,
                    ratios,
                    octave,
                    scales,
                })
            }
            "YOLOAnchorGenerator" => {
                let Some(Py::List(levels)) = get("base_sizes") else {
                    return Err(Error::InvalidInput("missing base_sizes".into()));
                };
                let mut base_sizes = Vec::new();
                for l in levels {
                    let Py::List(items) = l else {
                        return Err(Error::InvalidInput("base_sizes: expected lists".into()));
                    };
                    let mut lv = Vec::new();
                    for it in items {
                        let n = it.nums()?;
                        if n.len() != 2 {
                            return Err(Error::InvalidInput("base size must be (w, h)".into()));
                        }
                        lv.push([n[0], n[1]]);
                    }
                    base_sizes.push(lv);
                }
                Ok(Self::Yolo {
                    strides,
                    base_sizes,
                })
            }
            other => Err(Error::InvalidInput(format!(
                "unsupported generator type {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
enum Py {
    Num(f64),
    Str(String),
    List(Vec<Py>),
    Dict(Vec<(String, Py)>),
}

impl Py {
    fn num(&self) -> Result<f64> {
        match self {
            Py::Num(v) => Ok(*v),
            _ => Err(Error::InvalidInput(format!(
                "expected a number, got {self:?}"
            ))),
        }
    }
    fn nums(&self) -> Result<Vec<f64>> {
        match self {
            Py::List(v) => v.iter().map(|x| x.num()).collect(),
            _ => Err(Error::InvalidInput(format!(
                "expected a list of numbers, got {self:?}"
            ))),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() {
            match self.s[self.i] {
                b' ' | b'\n' | b'\t' | b'\r' => self.i += 1,
                b'#' => {
                    while self.i < self.s.len() && self.s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }
    fn err(&self, m: &str) -> Error {
        Error::InvalidInput(format!("anchor_generator snippet, byte {}: {m}", self.i))
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn seq(&mut self, close: u8) -> Result<Vec<Py>> {
        let mut v = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(v);
            }
            v.push(self.value()?);
            if !self.eat(b',') {
                if self.eat(close) {
                    return Ok(v);
                }
                return Err(self.err("expected ',' or closing bracket"));
            }
        }
    }
    fn value(&mut self) -> Result<Py> {
        self.ws();
        let c = *self
            .s
            .get(self.i)
            .ok_or_else(|| self.err("unexpected end"))?;
        match c {
            b'[' => {
                self.i += 1;
                Ok(Py::List(self.seq(b']')?))
            }
            b'(' => {
                self.i += 1;
                Ok(Py::List(self.seq(b')')?))
            }
            b'\'' | b'"' => {
                self.i += 1;
                let st = self.i;
                while self.i < self.s.len() && self.s[self.i] != c {
                    self.i += 1;
                }
                let s = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
                self.i += 1;
                Ok(Py::Str(s))
            }
            b'd' if self.s[self.i..].starts_with(b"dict(") => {
                self.i += 5;
                let mut kv = Vec::new();
                loop {
                    if self.eat(b')') {
                        return Ok(Py::Dict(kv));
                    }
                    self.ws();
                    let st = self.i;
                    while self.i < self.s.len()
                        && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
                    {
                        self.i += 1;
                    }
                    let key = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
                    if key.is_empty() || !self.eat(b'=') {
                        return Err(self.err("expected key=value"));
                    }
                    let v = self.value()?;
                    kv.push((key, v));
                    if !self.eat(b',') {
                        if self.eat(b')') {
                            return Ok(Py::Dict(kv));
                        }
                        return Err(self.err("expected ',' or ')'"));
                    }
                }
            }
            _ => {
                let st = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit() || b"+-.eE".contains(&self.s[self.i]))
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[st..self.i]).unwrap_or("");
                t.parse::<f64>()
                    .map(Py::Num)
                    .map_err(|_| self.err("expected a value"))
            }
        }
    }
}
