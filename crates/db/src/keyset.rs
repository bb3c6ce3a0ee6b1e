//! Lists paged by index: a page starts where the previous one ended (its
//! last row's sort key, `?after=`), so every page costs the same however
//! deep it is, where an `OFFSET` reads and drops every row before it.
//!
//! The links in Hydra's fields (`first`, `previous`, `next`, `last`) are
//! such cursors: `?after=K` (the rows after K, older), `?before=K` (the
//! rows before K, newer) and `?last=1` (the oldest rows). Hydra's
//! `?page=N` still works for its clients, as an offset (page 1 is the
//! first page, which reads no further than itself).

use serde::Deserialize;
use serde_json::Value;

/// The query of a paged list.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub page: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
    pub last: Option<String>,
}

/// Where a page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// The newest rows.
    First,
    /// Hydra's `?page=N` (N ≥ 2): an offset.
    Page(i64),
    /// The rows older than the key.
    After(Vec<i64>),
    /// The rows newer than the key.
    Before(Vec<i64>),
    /// The oldest rows.
    Last,
}

/// A sort key in a link: its numbers joined by `_`.
fn parse_key(text: &str) -> Option<Vec<i64>> {
    text.split('_').map(|n| n.parse().ok()).collect()
}

fn key_text(key: &[i64]) -> String {
    key.iter().map(i64::to_string).collect::<Vec<_>>().join("_")
}

impl Position {
    /// The position a query asks for (the first page when it makes no
    /// sense).
    pub fn of(q: &PageQuery) -> Position {
        if let Some(key) = q.after.as_deref().and_then(parse_key) {
            Position::After(key)
        } else if let Some(key) = q.before.as_deref().and_then(parse_key) {
            Position::Before(key)
        } else if q.last.is_some() {
            Position::Last
        } else {
            match q.page.as_deref().and_then(|p| p.parse::<i64>().ok()) {
                Some(n) if (2..=1_000_000).contains(&n) => Position::Page(n),
                _ => Position::First,
            }
        }
    }

    /// The index of the page's first row, when it is known (not after a
    /// cursor).
    pub fn first_index(&self, per_page: i64) -> Option<i64> {
        match self {
            Position::First => Some(0),
            Position::Page(n) => Some((n - 1) * per_page),
            _ => None,
        }
    }

    /// Whether the rows are read oldest first (and turned round after).
    fn ascending(&self) -> bool {
        matches!(self, Position::Before(_) | Position::Last)
    }

    /// The key the page is bound by, for `$param` (a `bigint[]`).
    pub fn key(&self) -> Vec<i64> {
        match self {
            Position::After(k) | Position::Before(k) => k.clone(),
            _ => Vec::new(),
        }
    }

    /// The condition on `columns` (the list's sort key, newest first when
    /// descending) against the key bound as `$param`: `true` when the page
    /// is not bound by a key.
    pub fn condition(&self, columns: &[&str], param: usize) -> String {
        let op = match self {
            Position::After(_) => "<",
            Position::Before(_) => ">",
            _ => return "true".into(),
        };
        let key: Vec<String> = (1..=columns.len())
            .map(|i| format!("${param}[{i}]"))
            .collect();
        format!("({}) {op} ({})", columns.join(", "), key.join(", "))
    }

    /// `order by … limit …` for a page of `per_page` rows, one more read
    /// to know whether there are further rows that way.
    pub fn order(&self, columns: &[&str], per_page: i64) -> String {
        let offset = self.first_index(per_page).unwrap_or(0);
        format!(
            "{} limit {} offset {offset}",
            self.order_by(columns),
            per_page + 1
        )
    }

    /// `order by …` on `columns` in the direction the page is read.
    fn order_by(&self, columns: &[&str]) -> String {
        let direction = if self.ascending() { "asc" } else { "desc" };
        let order: Vec<String> = columns.iter().map(|c| format!("{c} {direction}")).collect();
        format!("order by {}", order.join(", "))
    }

    /// `order by … limit …` for one part of a list merged from parts (each
    /// a subquery): as many rows as the page could take from it, offset
    /// included, since the offset applies to the merged list.
    pub fn part_order(&self, columns: &[&str], per_page: i64) -> String {
        let offset = self.first_index(per_page).unwrap_or(0);
        format!("{} limit {}", self.order_by(columns), offset + per_page + 1)
    }

    /// The page from the rows read (per [`Position::order`]), newest
    /// first, and Hydra's link fields for it.
    pub fn page<T>(
        &self,
        mut rows: Vec<T>,
        per_page: i64,
        key: impl Fn(&T) -> Vec<i64>,
    ) -> (Vec<T>, serde_json::Map<String, Value>) {
        let more = rows.len() as i64 > per_page;
        rows.truncate(per_page.max(0) as usize);
        if self.ascending() {
            rows.reverse();
        }
        let (newer, older) = match self {
            Position::First => (false, more),
            Position::Page(_) | Position::After(_) => (true, more),
            Position::Before(_) => (more, true),
            Position::Last => (more, false),
        };
        let mut links = serde_json::Map::new();
        links.insert("first".into(), Value::from("?page=1"));
        if newer {
            let previous = match rows.first() {
                Some(row) => format!("?before={}", key_text(&key(row))),
                // Past the oldest row: the oldest page is the one before.
                None => "?last=1".into(),
            };
            links.insert("previous".into(), Value::from(previous));
        }
        if older && let Some(row) = rows.last() {
            links.insert(
                "next".into(),
                Value::from(format!("?after={}", key_text(&key(row)))),
            );
        }
        links.insert("last".into(), Value::from("?last=1"));
        (rows, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(page: &str, after: &str, before: &str, last: &str) -> PageQuery {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PageQuery {
            page: some(page),
            after: some(after),
            before: some(before),
            last: some(last),
        }
    }

    #[test]
    fn positions_come_from_the_query_and_nonsense_is_the_first_page() {
        assert_eq!(Position::of(&query("", "", "", "")), Position::First);
        assert_eq!(Position::of(&query("1", "", "", "")), Position::First);
        assert_eq!(Position::of(&query("3", "", "", "")), Position::Page(3));
        assert_eq!(Position::of(&query("x", "", "", "")), Position::First);
        assert_eq!(
            Position::of(&query("", "1700000000_42", "", "")),
            Position::After(vec![1_700_000_000, 42])
        );
        assert_eq!(
            Position::of(&query("", "", "7", "")),
            Position::Before(vec![7])
        );
        assert_eq!(Position::of(&query("", "", "", "1")), Position::Last);
        assert_eq!(Position::of(&query("2", "1_x", "", "")), Position::Page(2));
    }

    #[test]
    fn conditions_and_orders_bind_the_key_as_one_array() {
        let cols = ["b.stopTime", "b.id"];
        let after = Position::After(vec![5, 6]);
        assert_eq!(
            after.condition(&cols, 3),
            "(b.stopTime, b.id) < ($3[1], $3[2])"
        );
        assert_eq!(
            after.order(&cols, 20),
            "order by b.stopTime desc, b.id desc limit 21 offset 0"
        );
        let before = Position::Before(vec![5, 6]);
        assert_eq!(
            before.condition(&cols, 1),
            "(b.stopTime, b.id) > ($1[1], $1[2])"
        );
        assert_eq!(
            before.order(&cols, 20),
            "order by b.stopTime asc, b.id asc limit 21 offset 0"
        );
        assert_eq!(Position::Page(3).condition(&cols, 1), "true");
        assert_eq!(
            Position::Page(3).part_order(&cols, 20),
            "order by b.stopTime desc, b.id desc limit 61",
            "a part gives the merged list as many rows as the offset and the page need"
        );
        assert_eq!(
            Position::Page(3).order(&cols, 20),
            "order by b.stopTime desc, b.id desc limit 21 offset 40"
        );
    }

    /// Pages of the numbers 1..=n in descending order, as the database
    /// would return them for `position`.
    fn read(position: &Position, n: i64, per_page: i64) -> Vec<i64> {
        let mut all: Vec<i64> = (1..=n).rev().collect();
        match position {
            Position::After(k) => all.retain(|v| *v < k[0]),
            Position::Before(k) => all.retain(|v| *v > k[0]),
            _ => {}
        }
        if position.ascending() {
            all.reverse();
        }
        let offset = position.first_index(per_page).unwrap_or(0) as usize;
        all.into_iter()
            .skip(offset)
            .take(per_page as usize + 1)
            .collect()
    }

    fn follow(link: &Value) -> Position {
        let text = link.as_str().unwrap_or_default();
        let (name, value) = text
            .trim_start_matches('?')
            .split_once('=')
            .unwrap_or_default();
        let q = match name {
            "page" => query(value, "", "", ""),
            "after" => query("", value, "", ""),
            "before" => query("", "", value, ""),
            "last" => query("", "", "", value),
            _ => panic!("unknown link {text}"),
        };
        Position::of(&q)
    }

    #[test]
    fn next_and_previous_links_walk_the_whole_list_both_ways() {
        let (n, per_page) = (45, 20);
        let mut seen = Vec::new();
        let mut position = Position::First;
        let mut pages = Vec::new();
        loop {
            let rows = read(&position, n, per_page);
            let (rows, links) = position.page(rows, per_page, |v| vec![*v]);
            seen.extend(rows.iter().copied());
            pages.push(rows);
            match links.get("next") {
                Some(next) => position = follow(next),
                None => break,
            }
        }
        assert_eq!(seen, (1..=n).rev().collect::<Vec<_>>());
        assert_eq!(pages.len(), 3);
        // Back from the oldest page, page by page.
        let mut position = follow(&Value::from("?last=1"));
        let mut back = Vec::new();
        loop {
            let rows = read(&position, n, per_page);
            let (rows, links) = position.page(rows, per_page, |v| vec![*v]);
            back.push(rows);
            match links.get("previous") {
                Some(previous) => position = follow(previous),
                None => break,
            }
        }
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], (1..=20).rev().collect::<Vec<_>>());
        assert_eq!(back[1], (21..=40).rev().collect::<Vec<_>>());
        assert_eq!(back[2], (41..=45).rev().collect::<Vec<_>>());
        // Hydra's page numbers still work.
        let rows = read(&Position::Page(2), n, per_page);
        let (rows, links) = Position::Page(2).page(rows, per_page, |v| vec![*v]);
        assert_eq!(rows, (6..=25).rev().collect::<Vec<_>>());
        assert_eq!(links["next"], "?after=6");
        assert_eq!(links["previous"], "?before=25");
    }
}
