//! Timed workers, latency histograms, the progress line and the anchor ratio.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` (saturating at the histogram's top).
pub(crate) fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 60_000_000);
    hist.saturating_record(us);
}

/// `p50_us`, `p99_us`, `p999_us` of `hist` into `map` (nothing if it is empty).
pub(crate) fn percentiles(map: &mut Map<String, Value>, prefix: &str, hist: &Histogram<u64>) {
    if hist.is_empty() {
        return;
    }
    for (name, q) in [("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999)] {
        map.insert(
            format!("{prefix}{name}"),
            json!(hist.value_at_quantile(q) as f64),
        );
    }
}

/// A once-per-second `\r`-updated line on stderr with the rate of `count`.
pub(crate) struct Progress {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts printing `label` and the per-second rate of what is added to the counter.
    pub(crate) fn start(label: String, unit: &'static str) -> Progress {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&count), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let now = c.load(Ordering::Relaxed);
                let rate = now.saturating_sub(last);
                last = now;
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r{label}: {:>4}s  {:>12} {unit}/s   ",
                    start.elapsed().as_secs(),
                    crate::human(rate as f64)
                );
                let _ = err.flush();
            }
        });
        Progress { count, stop, task }
    }

    /// The counter to add to.
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.count)
    }

    /// Stops the line.
    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        eprintln!();
    }
}

/// One operation of a worker: resolves to the bytes it moved, or an error text.
pub(crate) type Op =
    Box<dyn FnMut() -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'static>> + Send>;

/// What a set of timed workers measured after the warm-up.
pub(crate) struct Measured {
    pub(crate) ops: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) hist: Histogram<u64>,
    pub(crate) secs: f64,
}

impl Measured {
    /// `ops_per_sec`, `bytes_per_sec` (if any bytes), the percentiles and `errors`.
    pub(crate) fn fields(&self, map: &mut Map<String, Value>, with_bytes: bool) {
        map.insert("ops_per_sec".into(), json!(self.ops as f64 / self.secs));
        if with_bytes {
            map.insert("bytes_per_sec".into(), json!(self.bytes as f64 / self.secs));
        }
        percentiles(map, "", &self.hist);
        map.insert("errors".into(), json!(self.errors));
        if let Some(e) = &self.first_error {
            map.insert("first_error".into(), json!(e));
        }
    }

    /// Fails if nothing succeeded.
    pub(crate) fn check(&self, what: &str) -> anyhow::Result<()> {
        if self.ops == 0 {
            anyhow::bail!(
                "{what}: no operation succeeded ({} errors; first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("none")
            );
        }
        Ok(())
    }
}

/// Runs one worker per `ops` entry, each repeating its operation back to back for
/// `warmup + duration`; operations that start after the warm-up are counted and timed.
pub(crate) async fn run_workers(
    ops: Vec<Op>,
    warmup: Duration,
    duration: Duration,
    progress: &Progress,
) -> Measured {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let counter = progress.counter();
    let workers: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut m = Measured {
                    ops: 0,
                    bytes: 0,
                    errors: 0,
                    first_error: None,
                    hist: histogram(),
                    secs: 0.0,
                };
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = op().await;
                    let elapsed = t0.elapsed();
                    counter.fetch_add(1, Ordering::Relaxed);
                    if t0 < measure_from {
                        continue;
                    }
                    match result {
                        Ok(bytes) => {
                            m.ops += 1;
                            m.bytes += bytes;
                            record(&mut m.hist, elapsed);
                        }
                        Err(e) => {
                            m.errors += 1;
                            m.first_error.get_or_insert(e);
                            // Do not spin on a dead connection.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                m
            })
        })
        .collect();
    let mut total = Measured {
        ops: 0,
        bytes: 0,
        errors: 0,
        first_error: None,
        hist: histogram(),
        secs: duration.as_secs_f64(),
    };
    for worker in workers {
        match worker.await {
            Ok(m) => {
                total.ops += m.ops;
                total.bytes += m.bytes;
                total.errors += m.errors;
                if total.first_error.is_none() {
                    total.first_error = m.first_error;
                }
                let _ = total.hist.add(&m.hist);
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("worker failed: {e}"));
            }
        }
    }
    total
}

/// The fields a ratio is computed for, and whether lower is better.
const RATIO_FIELDS: [(&str, bool); 5] = [
    ("ops_per_sec", false),
    ("bytes_per_sec", false),
    ("p50_us", true),
    ("p99_us", true),
    ("p999_us", true),
];

/// Adds `anchor` (NATS's figures), `ratio` and `ratio_note` to `report`.
pub(crate) fn add_anchor(report: &mut Map<String, Value>, anchor: Map<String, Value>) {
    let mut ratio = Map::new();
    for (field, lower_is_better) in RATIO_FIELDS {
        let (Some(ours), Some(theirs)) = (
            report.get(field).and_then(Value::as_f64),
            anchor.get(field).and_then(Value::as_f64),
        ) else {
            continue;
        };
        let r = if lower_is_better {
            theirs / ours
        } else {
            ours / theirs
        };
        if r.is_finite() {
            ratio.insert(field.into(), json!(r));
        }
    }
    report.insert("anchor".into(), Value::Object(anchor));
    report.insert("ratio".into(), Value::Object(ratio));
    report.insert(
        "ratio_note".into(),
        json!(
            "tether / nats for throughput fields and nats / tether for latency fields: \
             above 1 means tether is better"
        ),
    );
}
