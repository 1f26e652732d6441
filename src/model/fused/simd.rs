//! Vectorisable f32 math and run-time dispatch. `exp` and `erf` are written without calls,
//! table look-ups or saturating float-to-int casts, so a loop over them compiles to AVX-512 (or
//! AVX2) code; `map_kernel!`/`map2_kernel!` define such a loop in a build for the best
//! instruction set this CPU has (detected at run time; the binary itself targets plain x86-64). Pure functions on
//! slices: no tensors, no threads.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two (Cody-Waite), so x - n ln 2 stays exact for the n that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x in f32 (relative error < 2e-7 over the clamped range [-87.3, 88.3]; below it returns
/// ~1e-38 instead of 0, above it ~2e38 instead of infinity).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // 2^n from n's integer bits inside t (n in -126..=127 here).
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    e * scale
}

/// erf(x) (|error| < 3e-7 in f32): its Taylor series below |x| = 0.8, where 1 - erfc would
/// cancel, and Abramowitz & Stegun 7.1.26 above. Both are computed and one is selected, so
/// the function stays branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    let large = (1.0 - poly * exp(-a * a)).copysign(x);
    let s = x * x;
    let series = 1.0
        + s * (-1.0 / 3.0
            + s * (1.0 / 10.0 + s * (-1.0 / 42.0 + s * (1.0 / 216.0 + s * (-1.0 / 1320.0 + s * (1.0 / 9360.0 + s * (-1.0 / 75600.0 + s / 685_440.0)))))));
    let small = x * std::f32::consts::FRAC_2_SQRT_PI * series;
    if a < 0.8 {
        small
    } else {
        large
    }
}

/// sum f(x_i) with element i added into lane i % 16 in index order, then the 16 lanes in
/// order. Written over whole groups of 16 so the loop vectorises (an `i % 16` index does not),
/// and every build gives the same bits.
#[inline(always)]
pub fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let mut groups = x.chunks_exact(16);
    for group in &mut groups {
        lanes.iter_mut().zip(group).for_each(|(l, &v)| *l += f(v));
    }
    lanes.iter_mut().zip(groups.remainder()).for_each(|(l, &v)| *l += f(v));
    lanes.iter().sum()
}

/// sum a_i b_i in the lanes of `lane_sum` (a and b of one length).
#[inline(always)]
pub fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut lanes = [0f32; 16];
    let (mut ga, mut gb) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut ga).zip(&mut gb) {
        lanes.iter_mut().zip(x.iter().zip(y)).for_each(|(l, (p, q))| *l += p * q);
    }
    lanes.iter_mut().zip(ga.remainder().iter().zip(gb.remainder())).for_each(|(l, (p, q))| *l += p * q);
    lanes.iter().sum()
}

/// Which build of a kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

/// The best instruction set of this CPU (std caches the detection).
pub fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Defines a function compiled three times (AVX-512, AVX2+FMA, baseline) and dispatched by
/// `isa()`: `multiversion! { fn name(a: A, b: B) -> R { body } }`, with doc comments and a
/// visibility as for any function. The body is written inside each build, so the helpers it
/// calls (`exp`, `lane_dot`, ...) inline into it and its loops vectorise. Rust never fuses a
/// multiply and an add by itself, so a body that fixes its order of summation gives the same
/// numbers in every build.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            match $crate::model::fused::simd::isa() {
                // SAFETY: the CPU has the features these builds were compiled for (`isa`).
                #[cfg(target_arch = "x86_64")]
                $crate::model::fused::simd::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::model::fused::simd::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}

/// Defines `pub fn $name(x: &[f32], out: &mut [f32])` computing out[i] = $body with `$x` =
/// x[i], by `multiversion!` (a closure passed in instead would stay a call per element).
macro_rules! map_kernel {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $crate::model::fused::simd::multiversion! {
            $(#[$doc])*
            pub fn $name(x: &[f32], out: &mut [f32]) {
                assert_eq!(x.len(), out.len());
                for (o, &$x) in out.iter_mut().zip(x) {
                    *o = $body;
                }
            }
        }
    };
}

/// As `map_kernel!` for two inputs: `pub fn $name(a: &[f32], b: &[f32], out: &mut [f32])`.
macro_rules! map2_kernel {
    ($(#[$doc:meta])* $name:ident, |$a:ident, $b:ident| $body:expr) => {
        $crate::model::fused::simd::multiversion! {
            $(#[$doc])*
            pub fn $name(a: &[f32], b: &[f32], out: &mut [f32]) {
                assert!(a.len() == out.len() && b.len() == out.len());
                for ((o, &$a), &$b) in out.iter_mut().zip(a).zip(b) {
                    *o = $body;
                }
            }
        }
    };
}

pub(crate) use {map2_kernel, map_kernel, multiversion};

map_kernel!(
    /// erf over a slice (tests compare the builds).
    erf_slice,
    |v| erf(v)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_float_precision() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0) > 1e38 && exp(1000.0).is_finite());
    }

    #[test]
    fn erf_matches_the_f64_series() {
        // erf by its Taylor series in f64 (converges fast for |x| <= 3), and erf(x) -> 1 beyond.
        let reference = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        let mut x = -3.0f32;
        while x <= 3.0 {
            let e = (erf(x) as f64 - reference(x as f64)).abs();
            assert!(e < 3e-7, "erf({x}) off by {e}");
            x += 0.001;
        }
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn every_build_computes_the_same() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let mut fast = vec![0f32; x.len()];
        erf_slice(&x, &mut fast);
        for (a, &v) in fast.iter().zip(&x) {
            assert!((a - erf(v)).abs() <= 1e-7);
        }
    }
}
