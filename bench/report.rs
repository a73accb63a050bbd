//! What the benches print besides their own figures: median-of-N table rows, and the
//! machine and its load, which skew every figure (two shared cores). Included by the
//! bench targets as `mod report;`.

#![allow(dead_code)]

use std::time::Duration;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A table of measures, each the median of `BENCH_RUNS` runs (default 10) with their
/// range and a target.
pub struct MedianTable {
    pub runs: usize,
}

impl MedianTable {
    /// Prints "runs per row: N" with `more` after it, then the table's header.
    pub fn start(more: &str) -> MedianTable {
        let runs = std::env::var("BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        println!("runs per row: {runs}{more}");
        println!();
        println!("| measure | median | min .. max | target |");
        println!("|---|---|---|---|");
        MedianTable { runs }
    }

    /// `measure` run `runs` times, in milliseconds: one row.
    pub fn row(&self, name: &str, target: &str, measure: impl Fn() -> f64) {
        let v: Vec<f64> = (0..self.runs).map(|_| measure()).collect();
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "| {name} | {:.1} ms | {:.1} .. {:.1} ms | {target} |",
            median(v),
            min,
            max
        );
    }
}

/// "N cores, <CPU model>".
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
