//! Figures the demo and benchmarks print.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Ack latencies in microseconds, 1 µs to 60 s at 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

pub(crate) fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
    histogram.record(micros).expect("value clamped into bounds");
}

/// "p50 0.41 ms, p99 2.10 ms, max 7.30 ms"
pub(crate) fn latency_summary(histogram: &Histogram<u64>) -> String {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0
    )
}

/// One line per shard with its count, share and a bar.
pub(crate) fn distribution(counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum::<u64>().max(1);
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut out = String::new();
    for (shard, &count) in counts.iter().enumerate() {
        let bar = "#".repeat(((count * 40) / max) as usize);
        out.push_str(&format!(
            "  shard-{shard:<3} {count:>9} {:>5.1}%  {bar}\n",
            count as f64 * 100.0 / total as f64
        ));
    }
    let mean = total as f64 / counts.len().max(1) as f64;
    let (lo, hi) = (counts.iter().copied().min().unwrap_or(0) as f64, max as f64);
    out.push_str(&format!(
        "  min/mean/max {lo:.0}/{mean:.0}/{hi:.0} (max is {:.2}x the mean)\n",
        hi / mean.max(1.0)
    ));
    out
}

pub(crate) fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}
