//! What the controller benchmarks share: the `BENCH` line, percentiles and
//! `--flag value` pairs.

/// Prints one figure as `BENCH <name> <value> <unit>`.
pub fn bench(name: &str, value: f64, unit: &str) {
    // `+ 0.0` turns an empty sum's -0.0 into 0.0.
    println!("BENCH {name} {:.3} {unit}", value + 0.0);
}

/// The `p` quantile (0..=1) of `samples`, nearest rank; sorts them.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

/// The `--name value` pairs of the command line (cargo's own arguments,
/// such as `--bench`, come without a value and are skipped).
pub fn flags() -> Vec<(String, String)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args.get(i + 1) {
            Some(v) if args[i].starts_with("--") && !v.starts_with("--") => {
                out.push((args[i].clone(), v.clone()));
                i += 2;
            }
            _ => i += 1,
        }
    }
    out
}
