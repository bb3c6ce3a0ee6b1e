//! What every page shows the same way: times, durations, statuses, names,
//! links, and reading the handlers' JSON.

use serde_json::Value;

/// Read access to a JSON object's fields with the defaults pages show
/// (empty text, no number, false, no items).
#[derive(Clone, Copy, Debug)]
pub(super) struct Fields<'a>(pub(super) &'a Value);

impl<'a> Fields<'a> {
    pub(super) fn str(self, key: &str) -> &'a str {
        self.0.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    pub(super) fn text(self, key: &str) -> String {
        self.str(key).to_string()
    }

    pub(super) fn int(self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(Value::as_i64)
    }

    /// A boolean, a number that is not 0 (Hydra's integer flags), or a
    /// form's text other than `0`, `false`, `off` and nothing.
    pub(super) fn flag(self, key: &str) -> bool {
        match self.0.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
            Some(Value::String(s)) => !matches!(s.as_str(), "" | "0" | "false" | "off"),
            _ => false,
        }
    }

    /// A field as a form shows it: text as it is, numbers in decimal.
    pub(super) fn shown(self, key: &str) -> String {
        match self.0.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_string(),
            _ => String::new(),
        }
    }

    pub(super) fn list(self, key: &str) -> &'a [Value] {
        self.0
            .get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The members of an object field, in its order.
    pub(super) fn members(self, key: &str) -> impl Iterator<Item = (&'a String, Fields<'a>)> {
        self.0
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, Fields(v)))
    }
}

/// The links of a paged list (Hydra's `first`, `previous`, `next` and
/// `last` fields): label and address.
pub(super) fn pager(d: Fields) -> Vec<(&'static str, String)> {
    [
        ("« First", "first"),
        ("‹ Previous", "previous"),
        ("Next ›", "next"),
        ("Last »", "last"),
    ]
    .into_iter()
    .filter(|(_, key)| !d.str(key).is_empty())
    .map(|(label, key)| (label, d.text(key)))
    .collect()
}

/// Which items a page shows out of how many: "items 21 - 40 out of 345",
/// or "20 items out of about 12,000" where the page follows a cursor and
/// the total is the database's estimate.
pub(super) fn shown(
    noun: &str,
    first: Option<i64>,
    len: usize,
    total: i64,
    estimated: bool,
) -> String {
    let len = len as i64;
    let out_of = if estimated {
        format!("about {}", grouped(rounded(total)))
    } else {
        grouped(total)
    };
    match first {
        Some(first) => format!("{noun} {} - {} out of {out_of}", first + 1, first + len),
        None => format!("{len} {noun} out of {out_of}"),
    }
}

/// `n` to two significant digits: what an estimate is worth.
fn rounded(n: i64) -> i64 {
    let mut unit = 1;
    while n.abs() / unit >= 100 {
        unit *= 10;
    }
    (n + unit / 2) / unit * unit
}

/// A number with its thousands separated by commas: `10,000`.
pub(super) fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A point in time as pages show it: `YYYY-MM-DD HH:MM:SS` (UTC), with
/// the ISO form for `<time datetime>`.
#[derive(Debug)]
pub(super) struct Time {
    pub(super) text: String,
    pub(super) iso: String,
}

impl Time {
    pub(super) fn of(unix: i64) -> Time {
        let (year, month, day, h, m, s) = hydra_db::utc(unix);
        Time {
            text: format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}"),
            iso: format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        }
    }
}

impl Time {
    /// The time relative to `now`, as Hydra's lists show it.
    pub(super) fn relative_to(unix: i64, now: i64) -> String {
        let ago = now - unix;
        match ago {
            -604_800..=-86_400 => format!("in {}d", -ago / 86_400),
            -86_399..=-3600 => format!("in {}h", -ago / 3600),
            -3599..=-60 => format!("in {}m", -ago / 60),
            -59..=-1 => format!("in {}s", -ago),
            0..60 => format!("{ago}s ago"),
            60..3600 => format!("{}m ago", ago / 60),
            3600..86_400 => format!("{}h ago", ago / 3600),
            86_400..604_800 => format!("{}d ago", ago / 86_400),
            _ => Time::of(unix).text[..10].to_string(),
        }
    }
}

/// A time with its relative form.
#[derive(Debug)]
pub(super) struct When {
    pub(super) text: String,
    pub(super) iso: String,
    pub(super) relative: String,
}

impl When {
    pub(super) fn of(unix: i64, now: i64) -> When {
        let t = Time::of(unix);
        When {
            text: t.text,
            iso: t.iso,
            relative: Time::relative_to(unix, now),
        }
    }
}

/// How a build's status is shown: a symbol, a class for its colour, and
/// the title every reader gets (the symbol is never the only signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StatusView {
    pub(super) class: &'static str,
    pub(super) symbol: &'static str,
    pub(super) title: &'static str,
}

impl StatusView {
    /// Hydra's icon for the status (`/static/images/<icon>`).
    pub(super) fn icon(&self) -> &'static str {
        match (self.class, self.symbol) {
            ("ok", _) => "emojione-check-2714.svg",
            ("queued", _) => "emojione-question-2754.svg",
            ("dep", _) => "emojione-gray-x-2716.svg",
            ("stop", _) => "emojione-stopsign-1f6d1.svg",
            _ => "emojione-red-x-274c.svg",
        }
    }
}

impl StatusView {
    pub(super) fn of(finished: bool, status: Option<i64>) -> StatusView {
        use hydra_db::status::BuildStatus as S;
        let view = |class, symbol, title| StatusView {
            class,
            symbol,
            title,
        };
        if !finished {
            return view("queued", "?", "Queued");
        }
        let status = status
            .and_then(|c| i32::try_from(c).ok())
            .and_then(S::from_code);
        match status {
            Some(S::Succeeded) => view("ok", "✔", "Succeeded"),
            Some(S::DependencyFailed) => view("dep", "✘", "Dependency failed"),
            Some(S::Aborted) => view("stop", "⊘", "Aborted"),
            Some(S::Cancelled) => view("stop", "⊘", "Cancelled"),
            Some(S::FailedWithOutput) => view("bad", "✘", "Failed with output"),
            Some(S::TimedOut) => view("stop", "⊘", "Timed out"),
            Some(S::Unsupported) => view("stop", "⊘", "Unsupported system type"),
            Some(S::LogLimitExceeded) => view("stop", "⊘", "Log limit exceeded"),
            Some(S::OutputLimitExceeded) => view("bad", "✘", "Output size limit exceeded"),
            Some(S::NotDeterministic) => view("bad", "✘", "Non-deterministic build"),
            _ => view("bad", "✘", "Failed"),
        }
    }
}

/// A predicted finish time as pages show it: "about 40 min, finishes
/// ~14:20 UTC (14:05–14:50)".
#[derive(Debug)]
pub(super) struct EtaView {
    pub(super) text: String,
    pub(super) iso: String,
    /// When the prediction was made.
    pub(super) made: String,
}

/// A time left in words, as precise as a prediction is worth.
fn about(seconds: i64) -> String {
    match seconds {
        ..60 => "under a minute".into(),
        60..3600 => format!("about {} min", (seconds + 30) / 60),
        3600..172_800 => {
            let minutes = (seconds + 150) / 300 * 5;
            match minutes % 60 {
                0 => format!("about {} h", minutes / 60),
                m => format!("about {} h {m} min", minutes / 60),
            }
        }
        _ => format!("about {} days", (seconds + 43_200) / 86_400),
    }
}

impl EtaView {
    /// From a prediction (`finishAt`, `low`, `high`, `madeAt`: Unix
    /// times) seen at `now`.
    pub(super) fn of(eta: &Value, now: i64) -> Option<EtaView> {
        let f = Fields(eta);
        let (finish, low, high) = (f.int("finishAt")?, f.int("low")?, f.int("high")?);
        let clock = |t: i64| Time::of(t).text[11..16].to_string();
        let day = |t: i64| Time::of(t).text[..10].to_string();
        let at = if day(finish) == day(now) {
            clock(finish)
        } else {
            Time::of(finish).text[..16].to_string()
        };
        let text = if finish <= now {
            format!("any moment now (it was expected at {} UTC)", clock(finish))
        } else if high - low < 60 {
            format!("{}, finishes ~{at} UTC", about(finish - now))
        } else {
            format!(
                "{}, finishes ~{at} UTC ({}–{})",
                about(finish - now),
                clock(low.max(now)),
                clock(high)
            )
        };
        Some(EtaView {
            text,
            iso: Time::of(finish).iso,
            made: f
                .int("madeAt")
                .map_or_else(String::new, |t| Time::relative_to(t, now)),
        })
    }
}

/// A duration as `[Dd ][Hh ][Mm ]Ss`, from the largest unit down.
pub(crate) fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d\u{a0}{h}h\u{a0}{m}m\u{a0}{sec}s")
    } else if h > 0 {
        format!("{h}h\u{a0}{m}m\u{a0}{sec}s")
    } else if m > 0 {
        format!("{m}m\u{a0}{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// A step's name: its derivation without store directory, hash and `.drv`.
pub(crate) fn step_name(drv_path: &str) -> String {
    let base = hydra_nix::store_path::base_name(drv_path);
    let name = base.split_once('-').map_or(base, |(_, n)| n);
    name.strip_suffix(".drv").unwrap_or(name).to_string()
}

/// `url` if it is an `http` or `https` address.
pub(super) fn web_link(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then(|| url.trim().to_string())
}

/// What stays as it is in a path segment: letters, digits and `-._~+`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+');

/// Percent-encodes one path segment (a job's name in a link: it may have
/// any character, `/` and `:` too).
pub(crate) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_civil_dates() {
        let t = Time::of(0);
        assert_eq!(
            (t.text.as_str(), t.iso.as_str()),
            ("1970-01-01 00:00:00", "1970-01-01T00:00:00Z")
        );
        assert_eq!(Time::of(1_700_000_000).text, "2023-11-14 22:13:20");
        assert_eq!(Time::of(951_782_400).text, "2000-02-29 00:00:00");
        assert_eq!(Time::of(-1).text, "1969-12-31 23:59:59");
    }

    #[test]
    fn relative_times_as_hydra_lists_show_them() {
        let now = 1_700_000_000;
        assert_eq!(Time::relative_to(now - 5, now), "5s ago");
        assert_eq!(Time::relative_to(now - 125, now), "2m ago");
        assert_eq!(Time::relative_to(now - 7200, now), "2h ago");
        assert_eq!(Time::relative_to(now - 3 * 86_400, now), "3d ago");
        assert_eq!(Time::relative_to(now - 30 * 86_400, now), "2023-10-15");
        assert_eq!(Time::relative_to(now + 60, now), "in 1m");
        assert_eq!(Time::relative_to(now + 5, now), "in 5s");
        assert_eq!(Time::relative_to(now + 2 * 86_400, now), "in 2d");
        assert_eq!(
            Time::relative_to(now + 30 * 86_400, now),
            "2023-12-14",
            "the far future is a date"
        );
    }

    #[test]
    fn every_status_has_a_title_besides_its_symbol() {
        assert_eq!(StatusView::of(false, None).title, "Queued");
        assert_eq!(StatusView::of(true, Some(0)).title, "Succeeded");
        assert_eq!(StatusView::of(true, Some(2)).title, "Dependency failed");
        assert_eq!(
            StatusView::of(true, Some(9)).title,
            "Unsupported system type"
        );
        assert_eq!(StatusView::of(true, Some(99)).title, "Failed");
        assert_eq!(StatusView::of(true, Some(4)).class, "stop");
    }

    #[test]
    fn predictions_read_as_time_left_and_clock_time() {
        let now = 1_700_000_000; // 2023-11-14 22:13:20 UTC
        let eta = |finish: i64, low: i64, high: i64| serde_json::json!({"finishAt": now + finish, "low": now + low, "high": now + high, "madeAt": now - 30});
        let v = EtaView::of(&eta(2400, 1500, 3900), now).map(|v| v.text);
        assert_eq!(
            v.as_deref(),
            Some("about 40 min, finishes ~22:53 UTC (22:38–23:18)")
        );
        let v = EtaView::of(&eta(5 * 3600 + 400, 5 * 3600, 5 * 3600 + 420), now);
        assert_eq!(
            v.map(|v| v.text).as_deref(),
            Some("about 5 h 5 min, finishes ~2023-11-15 03:20 UTC (03:13–03:20)")
        );
        let v = EtaView::of(&eta(-10, -20, 20), now).map(|v| v.text);
        assert_eq!(
            v.as_deref(),
            Some("any moment now (it was expected at 22:13 UTC)")
        );
        assert!(EtaView::of(&serde_json::json!({}), now).is_none());
        assert_eq!(about(30), "under a minute");
        assert_eq!(about(3 * 86_400), "about 3 days");
    }

    #[test]
    fn durations_and_step_names() {
        assert_eq!(duration(65), "1m\u{a0}5s");
        assert_eq!(duration(3600), "1h\u{a0}0m\u{a0}0s");
        assert_eq!(duration(90_061), "1d\u{a0}1h\u{a0}1m\u{a0}1s");
        assert_eq!(duration(0), "0s");
        assert_eq!(
            step_name("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv"),
            "hello-1.0"
        );
    }

    #[test]
    fn only_web_addresses_become_links() {
        assert_eq!(
            web_link(" https://example.org "),
            Some("https://example.org".into())
        );
        assert_eq!(web_link("HTTP://x"), Some("HTTP://x".into()));
        assert_eq!(web_link("javascript:alert(1)"), None);
        assert_eq!(web_link("data:text/html,x"), None);
    }
}
