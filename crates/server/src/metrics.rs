//! Operations: Prometheus metrics of the requests served (`/metrics`) and a
//! structured log line per request, both from one layer.

use std::sync::Arc;

use hydra_metrics::{Counter, Family, Histogram, Text, exponential_buckets};

/// The web server's metrics.
#[derive(Debug)]
pub struct Metrics {
    password_checks: Arc<Counter>,
    requests: Family<Counter>,
    latency: Family<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Self::with_password_checks(Arc::default())
    }

    /// With the counter of Argon2 password checks (see `passwords.rs`).
    pub fn with_password_checks(password_checks: Arc<Counter>) -> Metrics {
        Metrics {
            password_checks,
            requests: Family::default(),
            // 0.5 ms … ~16 s.
            latency: Family::new(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
        }
    }

    /// Counts and times one request.
    pub fn record(&self, method: &str, route: &str, code: u16, seconds: f64) {
        let code = code.to_string();
        self.requests
            .get(&[("method", method), ("route", route), ("code", &code)])
            .inc();
        self.latency
            .get(&[("method", method), ("route", route)])
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut t = Text::new();
        t.counter(
            "hydra_password_checks_total",
            "Argon2 password checks run for sign-ins (existing accounts or not)",
            self.password_checks.get(),
        );
        t.counters(
            "hydra_http_requests_total",
            "HTTP requests answered, by method, route pattern and status code",
            &self.requests,
        );
        t.histograms(
            "hydra_http_request_duration_seconds",
            "Time to produce the response head, by method and route pattern",
            &self.latency,
        );
        t.finish()
    }
}
