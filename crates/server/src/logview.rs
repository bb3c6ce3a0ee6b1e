//! What the log viewer reads from a log: a window of numbered lines (the
//! tail, a range, or the lines around one), or the lines that match a
//! search; and the lines as HTML with their ANSI colours as classes.
//!
//! A log is read through once, line by line, whatever its size: only the
//! window (or the matches) is kept, so a 100 MB log costs one pass and a
//! few thousand lines of memory, and the browser gets only what it shows.

use std::collections::VecDeque;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Lines a window holds at most.
pub(crate) const MAX_WINDOW: u64 = 5000;
/// Lines the viewer shows first: the end of the log.
pub(crate) const TAIL: u64 = 1000;
/// Matches a search lists at most.
pub(crate) const MAX_MATCHES: usize = 1000;
/// Bytes of one line that are shown; the rest is cut.
const MAX_LINE: usize = 10_000;

/// Which lines to read (numbered from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// The last `n` lines.
    Tail(u64),
    /// Lines `from` to `to`, both included.
    Range(u64, u64),
    /// The lines around line `n`.
    Around(u64),
    /// The lines that contain this text (any case).
    Search(String),
}

/// Lines read from a log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Read {
    /// Line number and text (without its end of line).
    pub lines: Vec<(u64, String)>,
    /// Lines in the whole log.
    pub total: u64,
    /// A search found more than `MAX_MATCHES`.
    pub more_matches: bool,
}

impl Window {
    /// The window `?from=`, `?to=`, `?line=` and `?search=` ask for;
    /// the tail without them. A range is cut to `MAX_WINDOW` lines.
    pub(crate) fn of(
        from: Option<u64>,
        to: Option<u64>,
        line: Option<u64>,
        search: Option<&str>,
    ) -> Window {
        if let Some(s) = search.map(str::trim).filter(|s| !s.is_empty()) {
            return Window::Search(s.to_lowercase());
        }
        if let Some(n) = line {
            return Window::Around(n.max(1));
        }
        match (from, to) {
            (Some(a), b) => {
                let a = a.max(1);
                let b = b.unwrap_or(a + MAX_WINDOW - 1).max(a);
                Window::Range(a, b.min(a + MAX_WINDOW - 1))
            }
            (None, Some(b)) => Window::Range(b.saturating_sub(MAX_WINDOW - 1).max(1), b),
            (None, None) => Window::Tail(TAIL),
        }
    }

    /// Whether line `n` is in the window (a search looks at `line`, the
    /// line's bytes in ASCII lower case).
    fn keeps(&self, n: u64, lower: impl FnOnce() -> bool) -> bool {
        match self {
            Window::Tail(_) => true,
            Window::Range(a, b) => (*a..=*b).contains(&n),
            Window::Around(l) => n + MAX_WINDOW / 2 > *l && n < l + MAX_WINDOW / 2,
            Window::Search(_) => lower(),
        }
    }
}

/// Whether `haystack` holds `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A line as the viewer shows it: invalid UTF-8 replaced, no `\r`.
fn decode(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.strip_suffix('\r').unwrap_or(&text).to_string()
}

/// Reads `reader` through once, keeping the lines `window` asks for. Only
/// kept lines are decoded; a search compares lines in ASCII lower case
/// (other letters as they are).
pub(crate) async fn read(reader: impl AsyncRead + Unpin, window: &Window) -> std::io::Result<Read> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut kept: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut out = Read::default();
    let mut buf = Vec::new();
    let mut lower = Vec::new();
    let needle: Vec<u8> = match window {
        Window::Search(s) => s.as_bytes().to_ascii_lowercase(),
        _ => Vec::new(),
    };
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).await? == 0 {
            break;
        }
        out.total += 1;
        let n = out.total;
        let end = buf.len() - usize::from(buf.ends_with(b"\n"));
        let line = &buf[..end.min(MAX_LINE)];
        let keep = window.keeps(n, || {
            lower.clear();
            lower.extend(line.iter().map(u8::to_ascii_lowercase));
            contains(&lower, &needle)
        });
        if !keep {
            continue;
        }
        if let Window::Search(_) = window
            && kept.len() >= MAX_MATCHES
        {
            out.more_matches = true;
            continue;
        }
        kept.push_back((n, line.to_vec()));
        if let Window::Tail(max) = window
            && kept.len() as u64 > *max
        {
            kept.pop_front();
        }
    }
    out.lines = kept.into_iter().map(|(n, l)| (n, decode(&l))).collect();
    Ok(out)
}

/// The SGR state of a line: colours and styles as CSS classes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn classes(&self) -> String {
        let mut c = Vec::new();
        if let Some(f) = self.fg {
            c.push(format!("ansi-fg{f}"));
        }
        if let Some(b) = self.bg {
            c.push(format!("ansi-bg{b}"));
        }
        for (on, name) in [
            (self.bold, "ansi-bold"),
            (self.dim, "ansi-dim"),
            (self.italic, "ansi-italic"),
            (self.underline, "ansi-underline"),
        ] {
            if on {
                c.push(name.to_string());
            }
        }
        c.join(" ")
    }

    /// Applies the parameters of one `ESC [ … m`.
    fn apply(&mut self, params: &[u16]) {
        let mut i = 0;
        if params.is_empty() {
            *self = Style::default();
        }
        while i < params.len() {
            match params[i] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                p @ 30..=37 => self.fg = Some((p - 30) as u8),
                39 => self.fg = None,
                p @ 40..=47 => self.bg = Some((p - 40) as u8),
                49 => self.bg = None,
                p @ 90..=97 => self.fg = Some((p - 90 + 8) as u8),
                p @ 100..=107 => self.bg = Some((p - 100 + 8) as u8),
                p @ (38 | 48) => {
                    // 256 colours (the first 16 kept) or true colour (dropped).
                    let colour = match params.get(i + 1) {
                        Some(5) => {
                            let c = params.get(i + 2).copied();
                            i += 2;
                            c.filter(|c| *c < 16).map(|c| c as u8)
                        }
                        Some(2) => {
                            i += 4;
                            None
                        }
                        _ => None,
                    };
                    if p == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// `line` as HTML: text escaped, colours and styles of its SGR escape
/// sequences as `<span class="ansi-…">`, every other escape sequence
/// (cursor movement, erasing, titles) left out.
pub(crate) fn ansi_html(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    let mut style = Style::default();
    let mut open = false;
    let mut chars = line.chars().peekable();
    let mut text = String::new();
    let flush = |out: &mut String, text: &mut String| {
        out.push_str(&crate::pages::escape(text));
        text.clear();
    };
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            if c.is_control() && c != '\t' {
                continue;
            }
            text.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                let mut seq = String::new();
                let mut end = None;
                for d in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&d) {
                        end = Some(d);
                        break;
                    }
                    seq.push(d);
                }
                if end != Some('m') {
                    continue;
                }
                let params: Vec<u16> = if seq.is_empty() {
                    Vec::new()
                } else {
                    seq.split(';').map(|p| p.parse().unwrap_or(0)).collect()
                };
                let mut next = style.clone();
                next.apply(&params);
                if next != style {
                    flush(&mut out, &mut text);
                    if open {
                        out.push_str("</span>");
                        open = false;
                    }
                    let classes = next.classes();
                    if !classes.is_empty() {
                        out.push_str(&format!("<span class=\"{classes}\">"));
                        open = true;
                    }
                    style = next;
                }
            }
            Some(']') => {
                // An operating system command, up to BEL or ESC \.
                chars.next();
                while let Some(d) = chars.next() {
                    if d == '\u{7}' || (d == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {
                chars.next();
            }
        }
    }
    flush(&mut out, &mut text);
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(log: &str, window: Window) -> Read {
        read(log.as_bytes(), &window).await.unwrap()
    }

    fn numbers(r: &Read) -> Vec<u64> {
        r.lines.iter().map(|(n, _)| *n).collect()
    }

    #[tokio::test]
    async fn windows_keep_only_their_lines_and_count_all() {
        let log: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let r = lines(&log, Window::Tail(3)).await;
        assert_eq!((numbers(&r), r.total), (vec![18, 19, 20], 20));
        assert_eq!(r.lines[0].1, "line 18");
        let r = lines(&log, Window::Range(2, 4)).await;
        assert_eq!(numbers(&r), [2, 3, 4]);
        let r = lines(&log, Window::of(None, None, None, Some("LINE 1"))).await;
        assert_eq!(numbers(&r).len(), 11, "1 and 10 to 19");
        let r = lines("a\r\nno end", Window::Tail(10)).await;
        assert_eq!(r.lines, [(1, "a".to_string()), (2, "no end".to_string())]);
    }

    #[tokio::test]
    async fn bad_bytes_and_huge_lines_do_not_break_the_viewer() {
        let mut log = b"ok\n\xff\xfe bad\n".to_vec();
        log.extend(std::iter::repeat_n(b'x', 50_000));
        let r = read(&log[..], &Window::Tail(10)).await.unwrap();
        assert_eq!(r.total, 3);
        assert!(r.lines[1].1.ends_with(" bad"));
        assert_eq!(r.lines[2].1.len(), MAX_LINE);
    }

    #[test]
    fn query_parameters_make_bounded_windows() {
        assert_eq!(Window::of(None, None, None, None), Window::Tail(TAIL));
        assert_eq!(
            Window::of(Some(10), Some(20), None, None),
            Window::Range(10, 20)
        );
        assert_eq!(
            Window::of(Some(1), Some(1_000_000), None, None),
            Window::Range(1, MAX_WINDOW)
        );
        assert_eq!(Window::of(None, None, Some(77), None), Window::Around(77));
        assert_eq!(
            Window::of(None, None, Some(77), Some(" Error ")),
            Window::Search("error".into())
        );
    }

    #[test]
    fn ansi_colours_become_classes_and_text_is_escaped() {
        assert_eq!(ansi_html("plain <b>"), "plain &lt;b&gt;");
        assert_eq!(
            ansi_html("\u{1b}[31merror\u{1b}[0m: x"),
            r#"<span class="ansi-fg1">error</span>: x"#
        );
        assert_eq!(
            ansi_html("\u{1b}[1;92mok\u{1b}[22m!\u{1b}[m"),
            r#"<span class="ansi-fg10 ansi-bold">ok</span><span class="ansi-fg10">!</span>"#
        );
        assert_eq!(
            ansi_html("\u{1b}[38;5;3my\u{1b}[38;2;1;2;3mz"),
            r#"<span class="ansi-fg3">y</span>z"#
        );
        assert_eq!(ansi_html("a\u{1b}[2Kb\u{1b}]0;title\u{7}c\u{8}"), "abc");
        assert_eq!(
            ansi_html("\u{1b}[31munclosed"),
            r#"<span class="ansi-fg1">unclosed</span>"#
        );
    }
}
