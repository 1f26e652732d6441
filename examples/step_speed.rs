#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use cp_piano::model::config::Config;
use cp_piano::model::cp_transformer::*;
fn main() -> candle_core::Result<()> {
    let preset = std::env::args().nth(1).unwrap_or("small".into());
    let (b, t): (usize, usize) = (std::env::args().nth(2).unwrap_or("4".into()).parse().unwrap(), std::env::args().nth(3).unwrap_or("512".into()).parse().unwrap());
    let c = Config::preset(&preset).unwrap();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let m = CpTransformer::new(&c, vb)?;
    let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
    println!("params {n} (formula {})", parameter_count(&c));
    let ids: Vec<u32> = (0..b * t * 7).map(|i| (i % 3) as u32).collect();
    let inputs = Tensor::from_vec(ids.clone(), (b, t, 7), &Device::Cpu)?;
    let pos: Vec<u32> = (0..b * t).map(|i| (i % t) as u32).collect();
    let positions = Tensor::from_vec(positional_encoding(&pos, c.d_model), (b, t, c.d_model), &Device::Cpu)?;
    let batch = Batch { inputs: inputs.clone(), targets: inputs, mask: Tensor::ones((b, t), DType::F32, &Device::Cpu)?, positions };
    let mut drop = Dropout::new(0.1, 1);
    for i in 0..8 {
        let s = std::time::Instant::now();
        let (loss, _) = m.loss(&batch, Some(&mut drop))?;
        let f = s.elapsed().as_secs_f64();
        let g = loss.backward()?;
        println!("step {i}: loss {:.3} fwd {:.3}s total {:.3}s ({} grads) {:.0} words/s", loss.to_scalar::<f32>()?, f, s.elapsed().as_secs_f64(), vm.all_vars().iter().filter(|v| g.get(v.as_tensor()).is_some()).count(), (b*t) as f64 / s.elapsed().as_secs_f64());
    }
    Ok(())
}
