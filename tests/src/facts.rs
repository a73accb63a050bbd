//! steward's log read as facts: each record's `steward_*` fields, so a test asserts what
//! happened (`steward_escalation=deadline` for generation 1) rather than how a sentence
//! words it. The words are render.rs's to change; the fields are the journal's interface
//! (`STEWARD_ESCALATION=deadline`), the same facts an operator filters on.
//!
//! A text record is `<time> <LEVEL> <message> steward_a=1 steward_b="text"`: a field's
//! value is bare (a number) or a Rust-escaped string in double quotes.

/// One log record: its line and its `steward_*` fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: String,
    pub fields: Vec<(String, String)>,
}

impl Record {
    pub fn parse(line: &str) -> Record {
        Record {
            line: line.to_string(),
            fields: parse_fields(line),
        }
    }

    /// The value of field `name` (the exact name: `steward_child_pid` is not
    /// `steward_child_pid_x`), unquoted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Field `name` as a number.
    pub fn num(&self, name: &str) -> Option<i64> {
        self.get(name)?.parse().ok()
    }

    /// Whether every `(name, value)` pair is one of this record's fields.
    pub fn has(&self, facts: &[(&str, &str)]) -> bool {
        facts.iter().all(|&(n, v)| self.get(n) == Some(v))
    }
}

/// Every record of `log` that states all of `facts`, in order.
pub fn records_with(log: &str, facts: &[(&str, &str)]) -> Vec<Record> {
    log.lines()
        .map(Record::parse)
        .filter(|r| r.has(facts))
        .collect()
}

/// The first record of `log` that states all of `facts`.
pub fn find_fact(log: &str, facts: &[(&str, &str)]) -> Option<Record> {
    log.lines().map(Record::parse).find(|r| r.has(facts))
}

/// Whether some record of `log` states all of `facts`, e.g.
/// `log_has(&log, &[("steward_escalation", "deadline"), ("steward_generation", "1")])`.
pub fn log_has(log: &str, facts: &[(&str, &str)]) -> bool {
    find_fact(log, facts).is_some()
}

/// How many records of `log` state all of `facts`.
pub fn count_facts(log: &str, facts: &[(&str, &str)]) -> usize {
    records_with(log, facts).len()
}

/// Field `field`'s value in each record stating `facts`, in order.
pub fn fact_values(log: &str, facts: &[(&str, &str)], field: &str) -> Vec<String> {
    records_with(log, facts)
        .iter()
        .filter_map(|r| r.get(field).map(str::to_string))
        .collect()
}

/// The `steward_*` fields of one text record. The message comes first and is free text;
/// a field starts at a space followed by `steward_<name>=`.
pub fn parse_fields(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(" steward_") {
        let after = &rest[at + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(name_len);
        let Some(value) = tail.strip_prefix('=') else {
            rest = &after[name_len..];
            continue;
        };
        let (value, used) = match value.strip_prefix('"') {
            Some(quoted) => match unquote(quoted) {
                Some((v, used)) => (v, used + 1),
                None => break,
            },
            None => {
                let end = value.find(' ').unwrap_or(value.len());
                (value[..end].to_string(), end)
            }
        };
        out.push((name.to_string(), value));
        rest = &tail[1 + used..];
    }
    out
}

/// A Rust-escaped string after its opening quote: its text and the bytes used up to and
/// including the closing quote; `None` when it does not close.
fn unquote(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE_KILL: &str = "2026-11-30T16:00:00.000000Z  WARN stop deadline reached after 3001 ms: SIGKILL to child pid 42's process tree (1 processes), 2 requests in flight were cut; stop deadline 3 s steward_phase=\"killing\" steward_event=\"killed\" steward_escalation=\"deadline\" steward_generation=1 steward_child_pid=42 steward_deadline_ms=3000";

    #[test]
    fn quoted_values_are_read_without_their_quotes() {
        let r = Record::parse(DEADLINE_KILL);
        assert_eq!(r.get("steward_phase"), Some("killing"));
        assert_eq!(r.get("steward_escalation"), Some("deadline"));
    }

    #[test]
    fn numbers_are_read_bare_and_as_numbers() {
        let r = Record::parse(DEADLINE_KILL);
        assert_eq!(r.get("steward_generation"), Some("1"));
        assert_eq!(r.num("steward_child_pid"), Some(42));
        assert_eq!(r.num("steward_deadline_ms"), Some(3000));
    }

    #[test]
    fn a_field_name_that_is_a_prefix_of_another_names_only_itself() {
        let line = "INFO ended steward_child_pid_group=7 steward_child=\"x\" steward_child_pid=9";
        let r = Record::parse(line);
        assert_eq!(r.get("steward_child_pid"), Some("9"));
        assert_eq!(r.get("steward_child"), Some("x"));
        assert_eq!(r.get("steward_child_p"), None);
        assert!(
            !Record::parse("INFO x steward_child_pid_group=7").has(&[("steward_child_pid", "7")])
        );
    }

    #[test]
    fn escaped_quotes_and_spaces_stay_inside_a_quoted_value() {
        let line = r#"INFO m steward_unit="a \"b\" c\\d" steward_generation=2"#;
        let r = Record::parse(line);
        assert_eq!(r.get("steward_unit"), Some(r#"a "b" c\d"#));
        assert_eq!(r.get("steward_generation"), Some("2"));
    }

    #[test]
    fn words_in_the_message_are_not_fields() {
        let r = Record::parse(
            "INFO steward_phase is not set here; nor steward_x steward_phase=\"serving\"",
        );
        assert_eq!(
            r.fields,
            vec![("steward_phase".to_string(), "serving".to_string())]
        );
    }

    #[test]
    fn a_record_is_found_by_all_of_its_facts_and_not_by_some() {
        let log = format!(
            "INFO a steward_escalation=\"drained\" steward_generation=1\n{DEADLINE_KILL}\n"
        );
        let deadline_1 = [
            ("steward_escalation", "deadline"),
            ("steward_generation", "1"),
        ];
        assert!(log_has(&log, &deadline_1));
        assert!(!log_has(
            &log,
            &[
                ("steward_escalation", "deadline"),
                ("steward_generation", "2")
            ]
        ));
        assert_eq!(count_facts(&log, &[("steward_generation", "1")]), 2);
        assert_eq!(
            fact_values(&log, &[("steward_generation", "1")], "steward_escalation"),
            ["drained", "deadline"]
        );
        assert_eq!(
            find_fact(&log, &deadline_1).and_then(|r| r.num("steward_child_pid")),
            Some(42)
        );
    }
}
