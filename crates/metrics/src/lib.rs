//! Prometheus metrics for every role: counters, gauges and histograms,
//! optionally per label set, and their text exposition (format 0.0.4).
//!
//! Series are written under the names they are given: Hydra's counters
//! are partly named without `_total` (`hydraqueuerunner_builds_read`), and
//! tools that scrape Hydra expect those names, so nothing is appended.
//! [`parse`] reads the format back, for tests and tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The `Content-Type` of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label set: names and values, in the order they are written.
pub type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Resident memory of process `pid` now and at its peak (`VmRSS`,
/// `VmHWM`), in bytes; `None` once it is gone.
pub fn resident_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `n` bucket bounds from `start`, each `factor` times the previous.
pub fn exponential_buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    std::iter::successors(Some(start), |b| Some(b * factor))
        .take(n)
        .collect()
}

/// Observations counted into buckets by upper bound.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    data: Mutex<HistogramData>,
}

/// A histogram's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramData {
    /// Per bound, the observations at most that bound (not cumulative);
    /// larger ones are only in `count`.
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: Vec<f64>) -> Histogram {
        let buckets = vec![0; bounds.len()];
        Histogram {
            bounds,
            data: Mutex::new(HistogramData {
                buckets,
                sum: 0.0,
                count: 0,
            }),
        }
    }

    pub fn observe(&self, v: f64) {
        let mut data = lock(&self.data);
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            data.buckets[i] += 1;
        }
        data.sum += v;
        data.count += 1;
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    pub fn snapshot(&self) -> HistogramData {
        lock(&self.data).clone()
    }
}

/// One metric per label set, made on first use.
pub struct Family<M> {
    make: Box<dyn Fn() -> M + Send + Sync>,
    members: Mutex<BTreeMap<Labels, Arc<M>>>,
}

impl<M> std::fmt::Debug for Family<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("members", &lock(&self.members).len())
            .finish()
    }
}

impl<M: Default + 'static> Default for Family<M> {
    fn default() -> Self {
        Family::new(M::default)
    }
}

impl<M> Family<M> {
    /// A family whose members `make` creates.
    pub fn new(make: impl Fn() -> M + Send + Sync + 'static) -> Family<M> {
        Family {
            make: Box::new(make),
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// The member with these labels.
    pub fn get(&self, pairs: &[(&str, &str)]) -> Arc<M> {
        let key = labels(pairs);
        let mut members = lock(&self.members);
        members
            .entry(key)
            .or_insert_with(|| Arc::new((self.make)()))
            .clone()
    }

    /// Every member, by label set.
    pub fn members(&self) -> Vec<(Labels, Arc<M>)> {
        lock(&self.members)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A sample value as the format writes it: integers without a fraction.
fn value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The text exposition of a set of metrics, written family by family.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(String, String)], v: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value(v));
    }

    /// A family of samples of `kind` (`counter`, `gauge`, `untyped`).
    pub fn samples(&mut self, name: &str, help: &str, kind: &str, samples: &[(Labels, f64)]) {
        self.header(name, help, kind);
        for (labels, v) in samples {
            self.sample(name, labels, *v);
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.samples(name, help, "counter", &[(Vec::new(), v as f64)]);
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.samples(name, help, "gauge", &[(Vec::new(), v)]);
    }

    pub fn counters(&mut self, name: &str, help: &str, family: &Family<Counter>) {
        let samples: Vec<(Labels, f64)> = family
            .members()
            .into_iter()
            .map(|(l, c)| (l, c.get() as f64))
            .collect();
        self.samples(name, help, "counter", &samples);
    }

    /// A histogram (`name_bucket`, `name_sum`, `name_count`).
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, help, "histogram");
        self.histogram_samples(name, &[], h.bounds(), &h.snapshot());
    }

    /// A histogram per label set.
    pub fn histograms(&mut self, name: &str, help: &str, family: &Family<Histogram>) {
        self.header(name, help, "histogram");
        for (labels, h) in family.members() {
            self.histogram_samples(name, &labels, h.bounds(), &h.snapshot());
        }
    }

    /// The samples of one histogram with `labels`, from its state.
    pub fn histogram_samples(
        &mut self,
        name: &str,
        labels: &[(String, String)],
        bounds: &[f64],
        data: &HistogramData,
    ) {
        let mut cumulative = 0;
        for (bound, n) in bounds.iter().zip(&data.buckets) {
            cumulative += n;
            let mut l = labels.to_vec();
            l.push(("le".into(), value(*bound)));
            self.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le".into(), "+Inf".into()));
        self.sample(&format!("{name}_bucket"), &l, data.count as f64);
        self.sample(&format!("{name}_sum"), labels, data.sum);
        self.sample(&format!("{name}_count"), labels, data.count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Serves `/metrics` on `listener`, the text `render` gives at each
/// request, until the returned task is aborted.
pub fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render()) }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    })
}

/// A sample read back from the text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Why a line of the text exposition could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub problem: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for ParseError {}

/// Reads the samples of a text exposition (comments are skipped).
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |problem: &str| ParseError {
            line: i + 1,
            problem: problem.to_string(),
        };
        let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(err("not a metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let mut key = String::new();
            let mut end = None;
            while let Some((pos, c)) = chars.next() {
                match c {
                    '}' if key.is_empty() => {
                        end = Some(pos + 1);
                        break;
                    }
                    ',' | ' ' if key.is_empty() => {}
                    '=' => {
                        if chars.next().map(|(_, c)| c) != Some('"') {
                            return Err(err("a label value is not quoted"));
                        }
                        let mut val = String::new();
                        loop {
                            match chars.next() {
                                Some((_, '\\')) => match chars.next() {
                                    Some((_, 'n')) => val.push('\n'),
                                    Some((_, c)) => val.push(c),
                                    None => return Err(err("unterminated label value")),
                                },
                                Some((_, '"')) => break,
                                Some((_, c)) => val.push(c),
                                None => return Err(err("unterminated label value")),
                            }
                        }
                        labels.push((std::mem::take(&mut key), val));
                    }
                    c => key.push(c),
                }
            }
            let end = end.ok_or_else(|| err("unterminated label set"))?;
            rest = &after[end..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| err("no value"))?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .map_err(|_| err("the value is not a number"))?,
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counters_keep_their_names_and_histograms_are_cumulative() {
        let hits: Family<Counter> = Family::default();
        hits.get(&[("method", "GET"), ("route", "/build/{id}")])
            .inc_by(2);
        let h = Histogram::new(vec![1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let mut t = Text::new();
        t.counter("hydraqueuerunner_builds_read", "Builds read", 7);
        t.counters("hydra_http_requests_total", "Requests", &hits);
        t.histogram("duration_seconds", "Durations", &h);
        let text = t.finish();
        assert!(text.contains(
            "# TYPE hydraqueuerunner_builds_read counter\nhydraqueuerunner_builds_read 7\n"
        ));
        assert!(
            text.contains("hydra_http_requests_total{method=\"GET\",route=\"/build/{id}\"} 2\n")
        );
        assert!(text.contains("duration_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("duration_seconds_sum 55.5\n"));
        assert!(text.contains("duration_seconds_count 3\n"));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(parse("ok 1\nbad{x=1} 2").unwrap_err().line, 2);
        assert!(parse("x{a=\"1} 2").is_err());
        assert!(parse("x one").is_err());
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(
            name in "[a-z_][a-z0-9_]{0,20}",
            values in proptest::collection::vec(("[a-z]{1,5}", "\\PC{0,12}", 0u32..1_000_000), 0..6),
        ) {
            let samples: Vec<(Labels, f64)> = values
                .iter()
                .map(|(k, v, n)| (vec![(k.clone(), v.clone())], f64::from(*n)))
                .collect();
            let mut t = Text::new();
            t.samples(&name, "help \\ with\nnewline", "gauge", &samples);
            let back = parse(&t.finish()).unwrap_or_default();
            let expected: Vec<Sample> = samples
                .into_iter()
                .map(|(labels, value)| Sample { name: name.clone(), labels, value })
                .collect();
            prop_assert_eq!(back, expected);
        }
    }
}
