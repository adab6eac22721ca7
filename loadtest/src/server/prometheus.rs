//! A reader of the Prometheus text exposition format (version 0.0.4), as authz serves it on
//! its admin listener's `/metrics`: samples (name, labels, value), and the histograms they
//! form, with the differences between two scrapes that the server report is made of.

use std::collections::BTreeMap;

/// At most this many samples are read from one scrape (authz exports a few hundred).
pub const SAMPLES_MAX: usize = 100_000;
/// At most this many labels on one sample.
pub const LABELS_MAX: usize = 32;

/// Why a scrape's text is not the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A sample line does not parse.
    #[error("line {line}: {what}")]
    Line {
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// More samples than [`SAMPLES_MAX`].
    #[error("more than {SAMPLES_MAX} samples")]
    TooMany,
}

/// One sample: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Labels in the order written.
    pub labels: Labels,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Parses a whole exposition. Comments (`# HELP`, `# TYPE`) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if samples.len() >= SAMPLES_MAX {
            return Err(ParseError::TooMany);
        }
        samples.push(parse_line(line).map_err(|what| ParseError::Line { line: index + 1, what })?);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp.
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp");
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Label pairs in the order written.
type Labels = Vec<(String, String)>;

/// Labels up to the closing brace; returns them and the text after the brace.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        if labels.len() >= LABELS_MAX {
            return Err("too many labels");
        }
        let equals = text.find('=').ok_or("label without =")?;
        let key = text[..equals].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("bad label name");
        }
        let quoted = text[equals + 1..].trim_start().strip_prefix('"').ok_or("label value not quoted")?;
        let (value, after) = unescape_until_quote(quoted)?;
        labels.push((key.to_owned(), value));
        text = after.trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// A label value up to its closing quote, with `\\`, `\"` and `\n` unescaped.
fn unescape_until_quote(text: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[index + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                _ => return Err("bad escape in a label value"),
            },
            c => value.push(c),
        }
    }
    Err("label value not closed")
}

fn parse_value(text: &str) -> Result<f64, &'static str> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| "bad value"),
    }
}

/// A histogram's figures: cumulative bucket counts by upper bound, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramData {
    /// (upper bound `le`, cumulative count), ascending by bound; the last is +Inf.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of observed values.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl HistogramData {
    /// Histogram `name` from `samples`, summed over every series whose labels contain `with`
    /// (for example `[("stage", "hsm")]`; empty: every series). None if no series matched.
    pub fn from_samples(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<Self> {
        let matches = |sample: &Sample| with.iter().all(|(key, value)| sample.label(key) == Some(*value));
        let (bucket_name, sum_name, count_name) =
            (format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count"));
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        let (mut sum, mut count, mut found) = (0.0, 0.0, false);
        for sample in samples.iter().filter(|s| matches(s)) {
            if sample.name == bucket_name {
                let Some(bound) = sample.label("le").and_then(|le| parse_value(le).ok()) else { continue };
                // Bounds are ordered through their bits: all are positive (or +Inf).
                let entry = buckets.entry(bound.to_bits()).or_insert((bound, 0.0));
                entry.1 += sample.value;
            } else if sample.name == sum_name {
                sum += sample.value;
                found = true;
            } else if sample.name == count_name {
                count += sample.value;
                found = true;
            }
        }
        found.then(|| Self { buckets: buckets.into_values().collect(), sum, count })
    }

    /// What was observed between `before` and `self` (a later scrape of the same histogram).
    /// A counter that went down (the server restarted) gives None.
    pub fn since(&self, before: &Self) -> Option<Self> {
        if self.count < before.count || self.buckets.len() != before.buckets.len() {
            return None;
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&before.buckets)
            .map(|((bound, after), (_, earlier))| (*bound, after - earlier))
            .collect();
        Some(Self { buckets, sum: self.sum - before.sum, count: self.count - before.count })
    }

    /// Mean observation (sum / count), None when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile (0 to 1) by linear interpolation inside the bucket it falls in, as
    /// Prometheus' `histogram_quantile` does; a quantile in the +Inf bucket is the largest
    /// finite bound. None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 || self.buckets.is_empty() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count;
        let (mut lower_bound, mut lower_count) = (0.0, 0.0);
        for (bound, cumulative) in &self.buckets {
            if *cumulative >= rank {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let in_bucket = cumulative - lower_count;
                let fraction = if in_bucket > 0.0 { (rank - lower_count) / in_bucket } else { 1.0 };
                return Some(lower_bound + (bound - lower_bound) * fraction);
            }
            (lower_bound, lower_count) = (*bound, *cumulative);
        }
        Some(lower_bound)
    }
}

/// The sum of counter `name` over the series whose labels contain `with`, None if absent.
pub fn counter(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let mut matched = samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(key, value)| s.label(key) == Some(*value)))
        .peekable();
    matched.peek()?;
    Some(matched.map(|s| s.value).sum())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SCRAPE: &str = r#"# HELP mps_authz_stage_duration_seconds Latency of the jws, hsm and ledger stages
# TYPE mps_authz_stage_duration_seconds histogram
mps_authz_stage_duration_seconds_bucket{stage="hsm",le="0.001"} 10
mps_authz_stage_duration_seconds_bucket{stage="hsm",le="0.0025"} 90
mps_authz_stage_duration_seconds_bucket{stage="hsm",le="+Inf"} 100
mps_authz_stage_duration_seconds_sum{stage="hsm"} 0.2
mps_authz_stage_duration_seconds_count{stage="hsm"} 100
mps_authz_stage_duration_seconds_bucket{stage="jws",le="0.001"} 100
mps_authz_stage_duration_seconds_bucket{stage="jws",le="0.0025"} 100
mps_authz_stage_duration_seconds_bucket{stage="jws",le="+Inf"} 100
mps_authz_stage_duration_seconds_sum{stage="jws"} 0.05
mps_authz_stage_duration_seconds_count{stage="jws"} 100
mps_authz_mac_failures_total 3
mps_authz_responses_total{code="00"} 95
mps_authz_responses_total{code="63"} 5 1700000000000
odd{path="a \"b\" \\ c\nd",x="1"} -Inf
"#;

    #[test]
    fn samples_labels_and_values_parse() {
        let samples = parse(SCRAPE).unwrap();
        assert_eq!(samples.len(), 14);
        assert_eq!(samples[0].name, "mps_authz_stage_duration_seconds_bucket");
        assert_eq!(samples[0].label("stage"), Some("hsm"));
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        let odd = samples.last().unwrap();
        assert_eq!(odd.label("path"), Some("a \"b\" \\ c\nd"));
        assert_eq!(odd.label("x"), Some("1"));
        assert_eq!(odd.value, f64::NEG_INFINITY);
        assert_eq!(counter(&samples, "mps_authz_mac_failures_total", &[]), Some(3.0));
        assert_eq!(counter(&samples, "mps_authz_responses_total", &[]), Some(100.0));
        assert_eq!(counter(&samples, "mps_authz_responses_total", &[("code", "63")]), Some(5.0));
        assert_eq!(counter(&samples, "absent", &[]), None);
    }

    #[test]
    fn broken_lines_are_refused_with_their_number() {
        for bad in [
            "name",
            "name{le=\"1\" 3",
            "name{le=1} 3",
            "name{le=\"1\"} three",
            "na-me 3",
            "name 3 4 5",
            "name{a=\"\\x\"} 1",
        ] {
            let text = format!("# ok\n{bad}\n");
            assert!(matches!(parse(&text), Err(ParseError::Line { line: 2, .. })), "{bad:?} should be refused");
        }
        assert_eq!(parse("").unwrap(), Vec::new());
    }

    #[test]
    fn random_text_is_refused_or_parsed_never_a_panic() {
        // The characters the format gives meaning to, and a few others.
        const ALPHABET: &[u8] = b"ab_:{}=\",\\n +-.0123456789eIfNa#\t\r\xc3\xa9";
        for _ in 0..20_000 {
            let length = rand::random::<usize>() % 48;
            let bytes: Vec<u8> = (0..length).map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()]).collect();
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(samples) = parse(&text) {
                for sample in samples {
                    assert!(!sample.name.is_empty());
                }
            }
        }
    }

    #[test]
    fn a_histogram_delta_gives_mean_and_interpolated_quantiles() {
        let samples = parse(SCRAPE).unwrap();
        let name = "mps_authz_stage_duration_seconds";
        let hsm = HistogramData::from_samples(&samples, name, &[("stage", "hsm")]).unwrap();
        assert_eq!(hsm.buckets.len(), 3);
        assert_eq!(hsm.count, 100.0);
        assert!((hsm.mean().unwrap() - 0.002).abs() < 1e-12);
        // The 50th of 100 is the 40th of 80 in (0.001, 0.0025]: halfway.
        assert!((hsm.quantile(0.5).unwrap() - 0.00175).abs() < 1e-12);
        // The 99th is in the +Inf bucket: the largest finite bound.
        assert_eq!(hsm.quantile(0.99), Some(0.0025));
        let both = HistogramData::from_samples(&samples, name, &[]).unwrap();
        assert_eq!(both.count, 200.0);
        assert_eq!(both.buckets[0], (0.001, 110.0));

        let earlier = HistogramData {
            buckets: vec![(0.001, 10.0), (0.0025, 10.0), (f64::INFINITY, 10.0)],
            sum: 0.005,
            count: 10.0,
        };
        let delta = hsm.since(&earlier).unwrap();
        assert_eq!(delta.count, 90.0);
        assert_eq!(delta.buckets[0], (0.001, 0.0), "the ten early fast ones are gone");
        assert!(delta.quantile(0.5).unwrap() > 0.001);
        assert_eq!(earlier.since(&hsm), None, "a counter going down is a restart, not a delta");
        assert_eq!(HistogramData::default().quantile(0.5), None);
        assert_eq!(HistogramData::from_samples(&samples, "absent", &[]), None);
    }
}
