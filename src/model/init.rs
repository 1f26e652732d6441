//! Seeded initialisation of a model's parameters, so a run is reproducible from its seed:
//! embeddings N(0, 1), linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's
//! defaults, which the paper used), LayerNorm weight 1 and bias 0; Transformer-XL's shared
//! attention biases (`r_w_bias`, `r_r_bias`) N(0, 0.02) as in its reference code.

use candle_core::{Result, Tensor, Var};

/// A small seeded generator (xorshift64*) with uniform and normal draws.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A random permutation of 0..n (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// Re-initialises named parameters from `seed` (names sorted, so the result is stable).
pub fn init_params(params: &[(String, Var)], seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    let mut sorted: Vec<&(String, Var)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    // A linear layer's fan-in is its weight's second dimension; a bias uses its weight's.
    let fan_in = |name: &str| -> usize {
        let weight = format!("{}weight", name.strip_suffix("bias").unwrap_or(name.strip_suffix("weight").unwrap_or(name)));
        params.iter().find(|(n, _)| *n == weight).map_or(1, |(_, w)| *w.dims().last().unwrap_or(&1))
    };
    for (name, var) in sorted {
        let n = var.elem_count();
        let values: Vec<f32> = if name.contains("norm") {
            vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; n]
        } else if name == "r_w_bias" || name == "r_r_bias" {
            (0..n).map(|_| (rng.normal() * 0.02) as f32).collect()
        } else if name.starts_with("embed.") {
            (0..n).map(|_| rng.normal() as f32).collect()
        } else {
            let bound = 1.0 / (fan_in(name) as f64).sqrt();
            (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect()
        };
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}
