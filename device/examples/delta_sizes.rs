//! Patch sizes of a pair of signed images with each normalisation (`cargo run --release -p
//! twinbank --features std --example delta_sizes -- BASE.img TARGET.img`): what BENCHMARKS.md's
//! "Delta updates" table reports per variant of the encoder.

use twinbank::delta::encode::{make_patch, EncodeOptions, Normalisation};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, target] = args.as_slice() else {
        return Err("usage: delta_sizes BASE.img TARGET.img".into());
    };
    let base = std::fs::read(base)?;
    let target = std::fs::read(target)?;
    let all = [
        ("off", Normalisation::Off),
        ("rebase", Normalisation::Rebase),
        ("map", Normalisation::Map),
    ];
    for (name, normalisation) in all {
        for window_bits in [10, 11] {
            let t = std::time::Instant::now();
            let p = make_patch(
                &base,
                &target,
                &EncodeOptions {
                    normalisation,
                    window_bits,
                    ..EncodeOptions::default()
                },
            )?;
            println!(
                "{name:<7} window {:>4} B: patch {:>6} B ({:.2} % of {} B), op stream {} B, {} segments, {:.2} s",
                1 << window_bits,
                p.bytes.len(),
                100.0 * p.bytes.len() as f64 / target.len() as f64,
                target.len(),
                p.op_stream.len(),
                p.segments,
                t.elapsed().as_secs_f64()
            );
            if normalisation == Normalisation::Map && window_bits == 11 {
                let sizes: Vec<String> = (8..=12)
                    .map(|b| {
                        let n = twinbank::delta::lz::compress(&p.op_stream, b).len();
                        format!("{} B window: {n}", 1 << b)
                    })
                    .collect();
                println!("        op stream LZ: {}", sizes.join(", "));
            }
        }
    }
    Ok(())
}
