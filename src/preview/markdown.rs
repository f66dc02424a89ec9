//! The report as a pull-request comment: a summary table first, then each group's findings and
//! diffs in a collapsible `<details>` section. Forges cap comments (GitHub at 65,536
//! characters), so the comment stops before [`MAX_COMMENT_BYTES`] with a note saying so.

use super::compare::{short, Comparison, Group};
use super::human::{plural, summary_line};

/// The comment never grows past this many bytes (and so characters), note included.
pub const MAX_COMMENT_BYTES: usize = 60_000;

/// Room kept for the note that says the comment was cut.
const NOTE_RESERVE: usize = 1_000;

/// Findings a table row shows before it says how many more there are.
const ROW_FINDINGS: usize = 2;

pub fn render(comparison: &Comparison) -> String {
    let budget = MAX_COMMENT_BYTES - NOTE_RESERVE;
    let mut out = format!(
        "### opamp-gitops diff: {} → {}\n\n",
        side(&comparison.base),
        side(&comparison.head)
    );
    if !comparison.base.compiles {
        out.push_str(&format!(
            "> [!WARNING]\n> The base `{}` does not compile: every agent counts as moving.\n\n",
            comparison.base.name
        ));
    }
    out.push_str(&format!("**{}**\n", escape(&summary_line(comparison))));
    let groups = &comparison.groups;
    if groups.is_empty() {
        return out;
    }
    out.push_str("\n| agents | rules | hashes | findings |\n| ---: | --- | --- | --- |\n");
    let mut rows = 0;
    for group in groups {
        let line = row(group);
        if out.len() + line.len() > budget {
            break;
        }
        out.push_str(&line);
        rows += 1;
    }
    let mut sections = 0;
    if rows == groups.len() {
        for group in groups {
            let text = section(group);
            if out.len() + text.len() > budget {
                break;
            }
            out.push_str(&text);
            sections += 1;
        }
    }
    if sections < groups.len() {
        out.push_str(&format!(
            "\n> [!NOTE]\n> This comment is cut to stay under {} characters: {} of {} groups are in the table and {} shown in full. Run `opamp-gitops diff` with `--format json` or `--format human` to see everything.\n",
            thousands(MAX_COMMENT_BYTES),
            rows,
            groups.len(),
            sections
        ));
    }
    out
}

fn side(side: &super::compare::Side) -> String {
    match &side.commit {
        Some(commit) => format!("`{}` ({})", escape(&side.name), short(commit)),
        None => escape(&side.name),
    }
}

fn row(group: &Group) -> String {
    let mut findings: Vec<String> = group
        .findings
        .iter()
        .take(ROW_FINDINGS)
        .map(|f| cell(f))
        .collect();
    if group.findings.len() > ROW_FINDINGS {
        findings.push(format!("and {} more", group.findings.len() - ROW_FINDINGS));
    }
    format!(
        "| {} | {} | {} | {} |\n",
        group.count,
        cell(&group.rules_text()),
        cell(&group.hashes_text()),
        findings.join("<br>")
    )
}

fn section(group: &Group) -> String {
    let mut out = format!(
        "\n<details><summary><b>{}</b> ({}): {}, {}</summary>\n\n",
        plural(group.count, "agent", "agents"),
        plural(group.sets, "attribute set", "attribute sets"),
        html(&group.rules_text()),
        html(&group.hashes_text())
    );
    if !group.attributes.is_empty() {
        let attributes: Vec<String> = group
            .attributes
            .iter()
            .map(|(k, v)| format!("`{}={}`", k.replace('`', "'"), v.replace('`', "'")))
            .collect();
        out.push_str(&format!("Attributes: {}\n\n", attributes.join(", ")));
    }
    for finding in &group.findings {
        out.push_str(&format!("- {}\n", escape(finding)));
    }
    if !group.findings.is_empty() {
        out.push('\n');
    }
    for diff in group.files.values() {
        let fence = "`".repeat(longest_backtick_run(diff).max(2) + 1);
        out.push_str(&format!("{fence}diff\n{diff}"));
        if !diff.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{fence}\n\n"));
    }
    out.push_str("</details>\n");
    out
}

/// Text outside code: HTML tags would be taken as markup.
fn escape(text: &str) -> String {
    text.replace('<', "&lt;").replace('>', "&gt;")
}

fn html(text: &str) -> String {
    escape(&text.replace('&', "&amp;"))
}

fn cell(text: &str) -> String {
    escape(text).replace('|', "\\|").replace('\n', " ")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_fences() {
        assert_eq!(thousands(60_000), "60,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(longest_backtick_run("a ```` b `` c"), 4);
        assert_eq!(cell("a | b\nc <d>"), "a \\| b c &lt;d&gt;");
    }
}
