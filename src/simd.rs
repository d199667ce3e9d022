//! Run-time choice between the AVX2 and the portable build of the hot kernels, and the switch
//! that forces the portable ones.
//!
//! The kernels that dominate the run time (the OpenCV-exact resize and normalize in
//! `preprocess::cv2_linear`, the score scan in `head::select`, the GFL integral in
//! `head::coder`, the anchor objectives in `anchor_opt`) have an x86_64 AVX2 version chosen at
//! run time and a portable one, which is what aarch64 devices (Jetson, Raspberry Pi) and every
//! other target run. Every dispatch goes through [`avx2`] / [`avx2_fma`] (or the
//! `avx2_or_portable!` macro built on them), so one switch covers them all:
//!
//! * `ANCHORKIT_SIMD=scalar` (environment variable, read once at the first kernel call) makes
//!   every kernel take its portable path on any CPU. The test suite runs once that way
//!   (`scripts/test-all.sh`), which is how the portable paths are checked on an x86_64 machine.
//! * `ANCHORKIT_SIMD=auto`, empty or unset: AVX2 (and FMA) when the CPU has them.
//!
//! Other values are ignored with a warning (auto). Results do not depend on the switch except
//! where a kernel's docs say so: the GFL integral's AVX2 `exp` is within 2 ulp of libm (boxes
//! within 1e-3 px); every other kernel is bit-identical on both paths.

use std::sync::atomic::{AtomicU8, Ordering};

/// Name of the environment variable that selects the kernels (`scalar` or `auto`).
pub const ENV: &str = "ANCHORKIT_SIMD";

/// The instruction sets the kernels may use, ordered (each level includes the ones below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code only (what non-x86_64 targets always run).
    Scalar,
    /// x86_64 AVX2.
    Avx2,
    /// x86_64 AVX2 and FMA.
    Avx2Fma,
}

impl Level {
    fn code(self) -> u8 {
        match self {
            Level::Scalar => 1,
            Level::Avx2 => 2,
            Level::Avx2Fma => 3,
        }
    }

    fn from_code(c: u8) -> Level {
        match c {
            2 => Level::Avx2,
            3 => Level::Avx2Fma,
            _ => Level::Scalar,
        }
    }
}

/// What the CPU supports, ignoring [`ENV`].
pub fn cpu_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return if std::arch::is_x86_feature_detected!("fma") {
                Level::Avx2Fma
            } else {
                Level::Avx2
            };
        }
    }
    Level::Scalar
}

/// 0 until the first call of [`level`], then `Level::code` of the level in use.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level the kernels use: [`cpu_level`], or [`Level::Scalar`] when [`ENV`] is `scalar`.
/// Decided once per process (the first call reads the environment).
#[inline]
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => init_level(),
        c => Level::from_code(c),
    }
}

#[cold]
fn init_level() -> Level {
    let l = match std::env::var(ENV) {
        Ok(v) => parse_switch(&v).unwrap_or_else(|| {
            tracing::warn!("{ENV}={v:?} is neither `scalar` nor `auto`; using auto");
            cpu_level()
        }),
        Err(_) => cpu_level(),
    };
    LEVEL.store(l.code(), Ordering::Relaxed);
    l
}

/// `Some(level)` for a recognised value of [`ENV`] (`scalar`, `auto` or empty; any case).
fn parse_switch(v: &str) -> Option<Level> {
    match v.trim().to_ascii_lowercase().as_str() {
        "scalar" => Some(Level::Scalar),
        "" | "auto" => Some(cpu_level()),
        _ => None,
    }
}

/// True when the AVX2 kernels may run (the CPU has AVX2 and [`ENV`] does not force scalar).
#[inline]
pub fn avx2() -> bool {
    level() >= Level::Avx2
}

/// True when the AVX2 + FMA kernels may run (the CPU has both and [`ENV`] does not force
/// scalar).
#[inline]
pub fn avx2_fma() -> bool {
    level() >= Level::Avx2Fma
}

/// Defines a function that runs a portable kernel body compiled for AVX2 when [`avx2`] holds,
/// else its portable build:
///
/// ```ignore
/// avx2_or_portable! {
///     /// docs
///     pub fn lane_sum(v: &[f32], f: impl Fn(f32) -> f64) -> f64 => lane_sum_body
/// }
/// ```
///
/// The body (`#[inline(always)]`, written as plain loops that the compiler vectorizes) is the
/// same code on both paths, and Rust never fuses a multiply and an add on its own, so both
/// builds compute bit-identical results; only the speed differs.
macro_rules! avx2_or_portable {
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? => $body:path
    ) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::avx2() {
                #[target_feature(enable = "avx2")]
                fn kernel_avx2($($a: $t),*) $(-> $r)? {
                    $body($($a),*)
                }
                // SAFETY: the CPU supports AVX2 (`simd::avx2` checked it).
                return unsafe { kernel_avx2($($a),*) };
            }
            $body($($a),*)
        }
    };
}

pub(crate) use avx2_or_portable;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_values() {
        assert_eq!(parse_switch("scalar"), Some(Level::Scalar));
        assert_eq!(parse_switch(" Scalar\n"), Some(Level::Scalar));
        assert_eq!(parse_switch("auto"), Some(cpu_level()));
        assert_eq!(parse_switch(""), Some(cpu_level()));
        assert_eq!(parse_switch("avx512"), None);
    }

    #[test]
    fn level_follows_the_environment() {
        let forced = std::env::var(ENV).is_ok_and(|v| parse_switch(&v) == Some(Level::Scalar));
        let want = if forced { Level::Scalar } else { cpu_level() };
        assert_eq!(level(), want);
        assert_eq!(avx2(), want >= Level::Avx2);
        assert_eq!(avx2_fma(), want == Level::Avx2Fma);
        for l in [Level::Scalar, Level::Avx2, Level::Avx2Fma] {
            assert_eq!(Level::from_code(l.code()), l);
        }
    }
}
