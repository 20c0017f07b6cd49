//! JUnit XML, so that CI systems list failing checkpoints like failing tests: one `<testsuite>`
//! per case, pass and mode ("case hello, decode step, isolated"), one `<testcase>` per row (a
//! pair of sources at one checkpoint, layer and tensor), and for a failing row a `<failure>`
//! whose message is the row's reason (the worst element, or the accuracy verdict) and whose
//! text holds the diagnosis. Valid against the Jenkins xunit plugin's junit-10.xsd (CI checks).

use std::fmt::Write;

use super::{Exporter, words};
use crate::validation::result::{Report, Row};
use crate::validation::spec::{Mode, Phase};

pub struct Junit;

impl Exporter for Junit {
    fn render(&self, report: &Report) -> String {
        type Suite<'a> = ((&'a str, Phase, Mode), Vec<&'a Row>); // ((case, pass, mode), rows)
        let mut suites: Vec<Suite<'_>> = Vec::new();
        for row in &report.rows {
            let key = (row.case.as_str(), row.phase, row.mode);
            match suites.iter_mut().find(|(k, _)| *k == key) {
                Some((_, rows)) => rows.push(row),
                None => suites.push((key, vec![row])),
            }
        }
        let (passed, failed) = report.counts();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"llorch validate\" tests=\"{}\" failures=\"{failed}\" errors=\"0\">",
            passed + failed
        );
        for (id, ((case, phase, mode), rows)) in suites.iter().enumerate() {
            let failures = rows.iter().filter(|r| !r.passed).count();
            let pass = if phase.is_decode() { phase.to_string() } else { "prompt".to_string() };
            let _ = writeln!(
                out,
                "  <testsuite id=\"{id}\" name=\"{}\" package=\"llorch\" tests=\"{}\" failures=\"{failures}\" \
                 errors=\"0\" skipped=\"0\" time=\"0\">",
                attr(&format!("case {case}, {pass}, {mode}")),
                rows.len()
            );
            out.push_str("    <properties>\n");
            let _ = writeln!(out, "      <property name=\"model\" value=\"{}\"/>", attr(&report.model));
            for source in &report.sources {
                let what = match &source.dir {
                    Some(dir) => format!("{} ({}, {dir})", source.role, source.precision.name()),
                    None => source.role.to_string(),
                };
                let _ = writeln!(
                    out,
                    "      <property name=\"source {}\" value=\"{}\"/>",
                    attr(&source.name),
                    attr(&what)
                );
            }
            out.push_str("    </properties>\n");
            for (i, row) in rows.iter().enumerate() {
                testcase(&mut out, row, i == 0 || !rows[i - 1].same_tensor(row));
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn testcase(out: &mut String, row: &Row, first_of_tensor: bool) {
    let mut place = format!("checkpoint {}", row.checkpoint);
    if let Some(layer) = row.layer {
        let _ = write!(place, ", layer {layer}");
    }
    let name = format!("{place}, {}: {}", row.tensor, row.pair);
    let classname =
        format!("llorch.{}.{}.cp{:02}", row.case, row.phase.name().replace(':', ""), row.checkpoint.index());
    let _ =
        write!(out, "    <testcase name=\"{}\" classname=\"{}\" time=\"0\"", attr(&name), attr(&classname));
    if row.passed {
        out.push_str("/>\n");
        return;
    }
    let reason = words::reason(row, first_of_tensor).unwrap_or_else(|| "failed".to_string());
    let kind = match (&row.stats, &row.accuracy) {
        (Some(s), _) if !s.passed() => "tolerance",
        (_, Some(a)) if !a.passed => "accuracy",
        _ => "mismatch",
    };
    let mut body = String::new();
    if let Some(blame) = row.blame {
        let _ = writeln!(body, "{blame}");
    }
    if let Some(d) = &row.diagnosis {
        for line in words::diagnosis(d) {
            let _ = writeln!(body, "{line}");
        }
    }
    let _ = writeln!(
        out,
        ">\n      <failure type=\"{kind}\" message=\"{}\">{}</failure>\n    </testcase>",
        attr(&reason),
        text(&body)
    );
}

/// Text as an XML attribute value: markup and quotes escaped, characters XML 1.0 forbids
/// dropped, line breaks kept as character references.
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Text as XML element content.
fn text(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, in_attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if in_attribute => out.push_str("&quot;"),
            '\n' if in_attribute => out.push_str("&#10;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_drops_what_xml_forbids() {
        assert_eq!(attr("a<b & \"c\"\n\u{1}"), "a&lt;b &amp; &quot;c&quot;&#10;");
        assert_eq!(text("x > y\n"), "x &gt; y\n");
    }
}
