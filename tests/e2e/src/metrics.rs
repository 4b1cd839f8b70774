//! The metrics route read the way a scraper reads it: Prometheus' text format, parsed
//! by `prometheus-parse`.

use prometheus_parse::{HistogramCount, LineInfo, Scrape, Value};

use crate::app::{INTERNAL_TOKEN, TestApp};

/// One scrape of `GET /api/v1/internal/metrics`.
#[derive(Debug)]
pub struct Metrics {
    pub text: String,
    scrape: Scrape,
}

impl Metrics {
    /// Parses `text`.
    ///
    /// # Panics
    /// A line is neither a comment nor a sample the parser reads (it skips those
    /// silently, so each line is checked first), or the text does not parse.
    pub fn parse(text: String) -> Self {
        for line in text.lines() {
            let ok = line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || matches!(LineInfo::parse(line), LineInfo::Sample { .. });
            assert!(ok, "not a Prometheus text line: {line:?}\n{text}");
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("metrics do not parse: {e}\n{text}"));
        Self { text, scrape }
    }

    /// The counter `name` with exactly `labels` (0 when the series is absent: a labelled
    /// series appears once it has moved).
    ///
    /// # Panics
    /// The series is there but is not a counter; the scrape declares no counter `name`;
    /// or the family has series, none with the label names asked for (a misspelt name
    /// or label would otherwise read as a counter that has not moved).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.scrape.samples.iter().find(|s| {
            s.metric == name
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                && s.labels.len() == labels.len()
        });
        if found.is_none() {
            let declared = format!("# TYPE {name} counter");
            assert!(
                self.text.lines().any(|line| line == declared),
                "the scrape has no counter {name}:\n{}",
                self.text
            );
            let family: Vec<_> = self
                .scrape
                .samples
                .iter()
                .filter(|s| s.metric == name)
                .collect();
            assert!(
                family.is_empty()
                    || family.iter().any(|s| s.labels.len() == labels.len()
                        && labels.iter().all(|(k, _)| s.labels.get(k).is_some())),
                "no series of {name} has the labels {labels:?}:\n{}",
                self.text
            );
        }
        match found.map(|s| &s.value) {
            None => 0.0,
            Some(Value::Counter(n)) => *n,
            Some(other) => panic!("{name} {labels:?} is not a counter: {other:?}"),
        }
    }

    /// The buckets of histogram `name` (cumulative counts by upper bound).
    ///
    /// # Panics
    /// There is no such histogram.
    pub fn buckets(&self, name: &str) -> Vec<HistogramCount> {
        self.scrape
            .samples
            .iter()
            .find_map(|s| match &s.value {
                Value::Histogram(buckets) if s.metric == name => Some(buckets.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name}:\n{}", self.text))
    }

    /// The gauge `name` (without labels).
    ///
    /// # Panics
    /// There is no such gauge.
    pub fn gauge(&self, name: &str) -> f64 {
        self.scrape
            .samples
            .iter()
            .find_map(|s| match s.value {
                Value::Gauge(n) if s.metric == name => Some(n),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no gauge {name}:\n{}", self.text))
    }

    /// The untyped sample `name` (a histogram's `_sum` and `_count`, written even for a
    /// histogram that has not moved).
    ///
    /// # Panics
    /// There is no such sample.
    pub fn plain(&self, name: &str) -> f64 {
        self.scrape
            .samples
            .iter()
            .find_map(|s| match s.value {
                Value::Untyped(n) | Value::Counter(n) if s.metric == name => Some(n),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no sample {name}:\n{}", self.text))
    }
}

impl TestApp {
    /// `GET /api/v1/internal/metrics` with the internal token.
    ///
    /// # Panics
    /// The route does not answer 200 in the text format, or the text does not parse.
    pub async fn metrics(&self) -> Metrics {
        let response = self
            .client
            .get(format!("{}/api/v1/internal/metrics", self.address))
            .bearer_auth(INTERNAL_TOKEN)
            .send()
            .await
            .expect("the request reaches the app");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("text")
            .to_string();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        Metrics::parse(response.text().await.expect("a body"))
    }

    /// Scrapes until `ready` holds, or for 10 s (the test's own assertion then fails):
    /// what a request learns late is written after its response has been sent.
    pub async fn metrics_once(&self, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        let every = std::time::Duration::from_millis(25);
        let ready = &ready;
        let ready = crate::poll::until_async(std::time::Duration::from_secs(10), every, || async {
            let metrics = self.metrics().await;
            ready(&metrics).then_some(metrics)
        })
        .await;
        match ready {
            Some(metrics) => metrics,
            None => self.metrics().await,
        }
    }
}
