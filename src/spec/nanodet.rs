//! Reading a NanoDet training config (`.yml`, RangiLyu/nanodet `config/`) into
//! [`ConfigValues`] for `anchorkit spec init --from`.
//!
//! Keys and their meaning (NanoDet source files named per value):
//!
//! | NanoDet key | spec field |
//! |---|---|
//! | `data.val.input_size` `[w, h]` | resize size |
//! | `data.val.keep_ratio` | `true`: `letterbox` (centred, pad 0: `nanodet/data/transform/warp.py` `get_resize_matrix` with `warpPerspective`), `false`: `stretch` |
//! | `data.val.pipeline.normalize` `[mean, std]` | `input.mean`, `input.std`; `channel_order: bgr` (NanoDet reads images with `cv2.imread`) |
//! | `class_names` | `classes` |
//! | `model.arch.head.num_classes` | C (checked against the graph) |
//! | `model.arch.head.name` | `NanoDetHead` / `GFLHead`: `gfl`, points offset 0.5 (`gfl_head.py` `get_single_level_center_point`); `NanoDetPlusHead`: offset 0 (`nanodet_plus_head.py` `get_single_level_center_priors`) |
//! | `model.arch.head.strides` | level strides (checked against the graph) |
//! | `model.arch.head.reg_max` | distribution coder `reg_max` (checked against the graph) |
//! | (fixed in `gfl_head.py` `get_bboxes`) | `nms_pre` 1000 (anchor-wise top-k by max score, `rule: legacy`), `score_thr` 0.05, `iou_thr` 0.6, `max_per_img` 100 |
//!
//! The letterbox is an approximation of NanoDet's warp: NanoDet maps the image with one
//! `cv2.warpPerspective` (continuous scale, no rounding of the content size), anchorkit resizes
//! to the rounded size with `cv2.resize` and pads; the content can differ by a fraction of a
//! pixel.

use super::init::{ConfigValues, Sourced};
use super::{ChannelOrder, CoderSpec, HeadKind, PostprocessRule, PriorSpec, ResizeRule};
use crate::{Error, Result};
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

/// Where NanoDet's fixed post-processing values live.
const FIXED_POST: &str = "fixed in NanoDet nanodet/model/head/gfl_head.py get_bboxes";

/// Reads the NanoDet `.yml` at `path`. Keys that are absent are left `None`; keys with the
/// wrong type are errors.
///
/// Errors: [`Error::Io`] for an unreadable file, [`Error::Spec`] naming the file and key for
/// malformed YAML or values, and for a config without `model.arch.head` (not a NanoDet config).
pub fn read(path: &Path) -> Result<ConfigValues> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

/// [`read`] on text already loaded; `path` names the source in errors.
pub fn parse(text: &str, path: &Path) -> Result<ConfigValues> {
    let err = |msg: String| Error::Spec {
        path: path.to_path_buf(),
        msg,
    };
    let docs = YamlLoader::load_from_str(text).map_err(|e| err(format!("not valid YAML: {e}")))?;
    let doc = docs
        .first()
        .ok_or_else(|| err("empty YAML document".into()))?;
    let head = &doc["model"]["arch"]["head"];
    if head.is_badvalue() {
        return Err(err(
            "no model.arch.head: not a NanoDet config (NanoDet .yml files have model.arch.head)"
                .into(),
        ));
    }
    let val = &doc["data"]["val"];
    let mut c = ConfigValues {
        kind: format!("NanoDet .yml {}", path.display()),
        ..ConfigValues::default()
    };

    let num = |y: &Yaml, key: &str| -> Result<Option<f64>> {
        match y {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::Integer(i) => Ok(Some(*i as f64)),
            Yaml::Real(s) => s
                .parse::<f64>()
                .map(Some)
                .map_err(|_| err(format!("{key}: {s:?} is not a number"))),
            _ => Err(err(format!("{key}: expected a number, found {y:?}"))),
        }
    };
    let uint = |y: &Yaml, key: &str| -> Result<Option<u32>> {
        match num(y, key)? {
            None => Ok(None),
            Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64 => Ok(Some(v as u32)),
            Some(v) => Err(err(format!("{key}: {v} is not a non-negative integer"))),
        }
    };
    let list = |y: &Yaml, key: &str| -> Result<Option<Vec<f64>>> {
        match y {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::Array(a) => a
                .iter()
                .map(|v| num(v, key)?.ok_or_else(|| err(format!("{key}: empty entry"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            _ => Err(err(format!("{key}: expected a list, found {y:?}"))),
        }
    };
    let three = |v: Vec<f64>, key: &str| -> Result<[f32; 3]> {
        match v.as_slice() {
            [a, b, cc] => Ok([*a as f32, *b as f32, *cc as f32]),
            _ => Err(err(format!("{key}: expected 3 values, found {}", v.len()))),
        }
    };

    // Head.
    let head_name = match &head["name"] {
        Yaml::String(s) => Some(s.clone()),
        Yaml::BadValue => None,
        y => {
            return Err(err(format!(
                "model.arch.head.name: expected a string, found {y:?}"
            )));
        }
    };
    match head_name.as_deref() {
        Some("NanoDetHead" | "GFLHead") => {
            c.head_kind = Some(Sourced::new(HeadKind::Gfl, "model.arch.head.name"));
            c.priors = Some(Sourced::new(
                PriorSpec::Points { offset: 0.5 },
                format!(
                    "model.arch.head.name {} (points at (x + 0.5) * stride: nanodet/model/head/gfl_head.py get_single_level_center_point)",
                    head_name.as_deref().unwrap_or_default()
                ),
            ));
        }
        Some("NanoDetPlusHead") => {
            c.head_kind = Some(Sourced::new(HeadKind::Gfl, "model.arch.head.name"));
            c.priors = Some(Sourced::new(
                PriorSpec::Points { offset: 0.0 },
                "model.arch.head.name NanoDetPlusHead (points at x * stride: nanodet/model/head/nanodet_plus_head.py get_single_level_center_priors)",
            ));
        }
        Some(other) => {
            return Err(err(format!(
                "model.arch.head.name {other:?}: anchorkit reads NanoDetHead, GFLHead and NanoDetPlusHead configs"
            )));
        }
        None => {}
    }
    if let Some(n) = uint(&head["num_classes"], "model.arch.head.num_classes")? {
        c.num_classes = Some(Sourced::new(n as usize, "model.arch.head.num_classes"));
    }
    if let Some(s) = list(&head["strides"], "model.arch.head.strides")? {
        let v: Vec<u32> = s.iter().map(|x| *x as u32).collect();
        c.strides = Some(Sourced::new(v, "model.arch.head.strides"));
    }
    if let Some(r) = uint(&head["reg_max"], "model.arch.head.reg_max")? {
        c.reg_max = Some(Sourced::new(r, "model.arch.head.reg_max"));
        c.coder = Some(Sourced::new(
            CoderSpec::Distribution {
                reg_max: r,
                scale_by_stride: true,
                clip_border: true,
            },
            "model.arch.head.reg_max (distances times stride, clamped to the input: gfl_head.py distribution_project, distance2bbox)",
        ));
    }

    // Input.
    let size = match list(&val["input_size"], "data.val.input_size")? {
        None => None,
        Some(v) if v.len() == 2 && v.iter().all(|x| *x >= 1.0 && x.fract() == 0.0) => {
            Some([v[0] as u32, v[1] as u32])
        }
        Some(v) => {
            return Err(err(format!(
                "data.val.input_size: expected [w, h] in pixels, found {v:?}"
            )));
        }
    };
    let keep_ratio = match &val["keep_ratio"] {
        Yaml::Boolean(b) => Some(*b),
        Yaml::BadValue | Yaml::Null => None,
        y => {
            return Err(err(format!(
                "data.val.keep_ratio: expected True or False, found {y:?}"
            )));
        }
    };
    if let Some([w, h]) = size {
        let (rule, how) = match keep_ratio {
            Some(true) => (
                ResizeRule::Letterbox {
                    width: w,
                    height: h,
                    pad_value: 0.0,
                },
                "data.val.input_size + data.val.keep_ratio True (centred, pad 0: nanodet/data/transform/warp.py get_resize_matrix)",
            ),
            Some(false) => (
                ResizeRule::Stretch {
                    width: w,
                    height: h,
                },
                "data.val.input_size + data.val.keep_ratio False",
            ),
            None => {
                return Err(err(
                    "data.val.keep_ratio is missing (NanoDet requires it with input_size)".into(),
                ));
            }
        };
        c.resize = Some(Sourced::new(rule, how));
    }
    let normalize = &val["pipeline"]["normalize"];
    match normalize {
        Yaml::BadValue | Yaml::Null => {}
        Yaml::Array(a) if a.len() == 2 => {
            let key = "data.val.pipeline.normalize";
            let m = three(list(&a[0], key)?.unwrap_or_default(), key)?;
            let s = three(list(&a[1], key)?.unwrap_or_default(), key)?;
            c.mean = Some(Sourced::new(m, format!("{key}[0]")));
            c.std = Some(Sourced::new(s, format!("{key}[1]")));
            c.channel_order = Some(Sourced::new(
                ChannelOrder::Bgr,
                "NanoDet reads images with cv2.imread (BGR); data.val.pipeline.normalize is in BGR order",
            ));
        }
        y => {
            return Err(err(format!(
                "data.val.pipeline.normalize: expected [[mean x3], [std x3]], found {y:?}"
            )));
        }
    }
    match &doc["class_names"] {
        Yaml::BadValue | Yaml::Null => {}
        Yaml::Array(a) => {
            let names = a
                .iter()
                .map(|v| match v {
                    Yaml::String(s) => Ok(s.clone()),
                    Yaml::Integer(i) => Ok(i.to_string()),
                    y => Err(err(format!("class_names: entry {y:?} is not a name"))),
                })
                .collect::<Result<Vec<_>>>()?;
            c.classes = Some(Sourced::new(names, "class_names"));
        }
        y => return Err(err(format!("class_names: expected a list, found {y:?}"))),
    }
    if let (Some(n), Some(cl)) = (&c.num_classes, &c.classes)
        && n.value != cl.value.len()
    {
        return Err(err(format!(
            "model.arch.head.num_classes is {} but class_names has {} names",
            n.value,
            cl.value.len()
        )));
    }

    // Post-processing: not configurable in NanoDet.
    c.nms_pre = Some(Sourced::new(1000, FIXED_POST));
    c.score_thr = Some(Sourced::new(0.05, FIXED_POST));
    c.iou_thr = Some(Sourced::new(0.6, FIXED_POST));
    c.max_per_img = Some(Sourced::new(100, FIXED_POST));
    c.rule = Some(Sourced::new(
        PostprocessRule::Legacy,
        "fixed in NanoDet gfl_head.py get_bboxes_single (top 1000 priors by max score, then multiclass_nms)",
    ));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_values() {
        let y = "model:\n  arch:\n    head:\n      name: NanoDetHead\n      num_classes: 2\n      strides: [8, 16, 32]\n      reg_max: 7\n\
                 data:\n  val:\n    input_size: [320,192] #[w,h]\n    keep_ratio: False\n    pipeline:\n      normalize: [[1, 2, 3.5], [4, 5, 6]]\n\
                 class_names: ['a', b]\n";
        let c = parse(y, Path::new("c.yml")).unwrap();
        assert_eq!(
            c.resize.unwrap().value,
            ResizeRule::Stretch {
                width: 320,
                height: 192
            }
        );
        assert_eq!(c.mean.unwrap().value, [1.0, 2.0, 3.5]);
        assert_eq!(c.std.unwrap().value, [4.0, 5.0, 6.0]);
        assert_eq!(c.classes.unwrap().value, ["a", "b"]);
        assert_eq!(c.strides.unwrap().value, [8, 16, 32]);
        assert_eq!(c.reg_max.unwrap().value, 7);
        assert_eq!(c.priors.unwrap().value, PriorSpec::Points { offset: 0.5 });
        assert_eq!(c.rule.unwrap().value, PostprocessRule::Legacy);
        let bad = y.replace("num_classes: 2", "num_classes: 3");
        let e = parse(&bad, Path::new("c.yml")).unwrap_err().to_string();
        assert!(e.contains("c.yml") && e.contains("num_classes is 3"), "{e}");
        let e = parse("a: [1", Path::new("c.yml")).unwrap_err().to_string();
        assert!(e.contains("not valid YAML"), "{e}");
        let e = parse("a: 1\n", Path::new("c.yml")).unwrap_err().to_string();
        assert!(e.contains("not a NanoDet config"), "{e}");
        let plus = y.replace("NanoDetHead", "NanoDetPlusHead");
        let c = parse(&plus, Path::new("c.yml")).unwrap();
        assert_eq!(c.priors.unwrap().value, PriorSpec::Points { offset: 0.0 });
    }
}
