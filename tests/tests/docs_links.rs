//! The documentation stands alone: every markdown link in README.md and docs/*.md resolves to a
//! file inside the repository (and an anchor to a heading of its file), and no document names a
//! file outside the repository, which a clone does not have.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Text that names files outside the repository.
const FORBIDDEN: [&str; 3] = ["../shared", "/work/", "HSM-FACTS"];

/// Link schemes that point outside the repository on purpose and are not checked.
const EXTERNAL_SCHEMES: [&str; 3] = ["http://", "https://", "mailto:"];

/// A markdown link: its target as written and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    target: String,
    line: usize,
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository root").to_path_buf()
}

/// README.md and every docs/*.md, as paths relative to the repository root.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "md"))
        .map(|path| path.strip_prefix(root).expect("under the root").to_path_buf())
        .collect();
    docs.sort();
    let mut all = vec![PathBuf::from("README.md")];
    all.extend(docs);
    all
}

/// Whether a line opens or closes a fenced code block, and with which marker.
fn fence_marker(line: &str) -> Option<&'static str> {
    let trimmed = line.trim_start();
    if trimmed.starts_with("```") {
        Some("```")
    } else if trimmed.starts_with("~~~") {
        Some("~~~")
    } else {
        None
    }
}

/// The lines of `markdown` outside fenced code blocks, with their 1-based numbers.
fn lines_outside_fences(markdown: &str) -> Vec<(usize, &str)> {
    let mut open: Option<&str> = None;
    let mut kept = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        match (open, fence_marker(line)) {
            (None, Some(marker)) => open = Some(marker),
            (Some(current), Some(marker)) if current == marker => open = None,
            (None, None) => kept.push((index + 1, line)),
            _ => {}
        }
    }
    kept
}

/// `line` without its inline code spans (a backtick run, up to the next run of the same length).
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        let after = i + run;
        let closing = (after..chars.len()).find(|&j| {
            let length = chars[j..].iter().take_while(|c| **c == '`').count();
            length == run && (j == 0 || chars[j - 1] != '`')
        });
        match closing {
            Some(j) => i = j + run,
            None => {
                out.extend(&chars[i..after]);
                i = after;
            }
        }
    }
    out
}

/// The index of the `]` that closes the `[` at `open`, within one paragraph.
fn closing_bracket(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            '\n' if chars.get(i + 1) == Some(&'\n') => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Every inline link `[text](target)` (and image) outside code, in order.
fn links(markdown: &str) -> Vec<Link> {
    let mut text = String::new();
    let mut line_of_char = Vec::new();
    for (number, line) in lines_outside_fences(markdown) {
        for c in without_code_spans(line).chars().chain(std::iter::once('\n')) {
            text.push(c);
            line_of_char.push(number);
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == '['
            && let Some(close) = closing_bracket(&chars, i)
            && chars.get(close + 1) == Some(&'(')
            && let Some(length) = chars[close + 2..].iter().position(|c| *c == ')' || *c == '\n')
            && chars[close + 2 + length] == ')'
        {
            let inside: String = chars[close + 2..close + 2 + length].iter().collect();
            let target = inside.split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            found.push(Link { target: target.to_owned(), line: line_of_char[i] });
            i = close + 2 + length + 1;
            continue;
        }
        i += 1;
    }
    found
}

/// The anchor GitHub gives a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces turned into `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every ATX heading (`#` to `######`) outside code blocks; a repeated heading
/// gets `-1`, `-2`, ... as on GitHub.
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in lines_outside_fences(markdown) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = line.trim_start_matches(' ');
        let level = rest.chars().take_while(|c| *c == '#').count();
        if indent > 3 || !(1..=6).contains(&level) {
            continue;
        }
        let title = &rest[level..];
        if !(title.is_empty() || title.starts_with(' ')) {
            continue;
        }
        let title = title.trim().trim_end_matches('#').trim();
        let base = anchor(title);
        let count = seen.entry(base.clone()).or_insert(0);
        out.push(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
        *count += 1;
    }
    out
}

/// The path `target` names from a document in `document_dir` (both relative to the root), or
/// why it is not a path inside the repository.
fn resolve(document_dir: &Path, target: &str) -> Result<PathBuf, String> {
    if target.starts_with('/') || target.starts_with('\\') || target.contains(':') {
        return Err("is not a relative path inside the repository".to_owned());
    }
    let mut parts: Vec<String> =
        document_dir.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
    for piece in target.split('/') {
        match piece {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("leaves the repository".to_owned());
                }
            }
            name => parts.push(name.to_owned()),
        }
    }
    Ok(parts.iter().collect())
}

/// Every broken link of `document` (a path relative to `root`) whose text is `markdown`.
fn link_problems(root: &Path, document: &Path, markdown: &str) -> Vec<String> {
    let document_dir = document.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for link in links(markdown) {
        let report = |why: &str| format!("{}:{}: link `{}` {why}", document.display(), link.line, link.target);
        if EXTERNAL_SCHEMES.iter().any(|scheme| link.target.starts_with(scheme)) {
            continue;
        }
        if link.target.is_empty() {
            problems.push(report("is empty"));
            continue;
        }
        let (path, fragment) = match link.target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (link.target.as_str(), None),
        };
        let (resolved, headings) = if path.is_empty() {
            (document.to_path_buf(), anchors(markdown))
        } else {
            let resolved = match resolve(document_dir, path) {
                Ok(resolved) => resolved,
                Err(why) => {
                    problems.push(report(&why));
                    continue;
                }
            };
            if !root.join(&resolved).exists() {
                problems.push(report(&format!("names {}, which does not exist", resolved.display())));
                continue;
            }
            let is_markdown = resolved.extension().is_some_and(|extension| extension == "md");
            let headings = if is_markdown {
                anchors(&std::fs::read_to_string(root.join(&resolved)).unwrap_or_default())
            } else {
                Vec::new()
            };
            (resolved, headings)
        };
        let checks_anchor = resolved.extension().is_some_and(|extension| extension == "md");
        if let Some(fragment) = fragment
            && checks_anchor
            && !headings.iter().any(|heading| heading == fragment)
        {
            problems
                .push(report(&format!("names the anchor #{fragment}, which no heading of {} has", resolved.display())));
        }
    }
    problems
}

/// Every mention of a file outside the repository in `markdown`.
fn mention_problems(document: &Path, markdown: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        for word in FORBIDDEN {
            if line.contains(word) {
                problems.push(format!(
                    "{}:{}: mentions `{word}`, outside the repository",
                    document.display(),
                    index + 1
                ));
            }
        }
    }
    problems
}

#[test]
fn every_link_in_the_documentation_resolves_inside_the_repository() {
    let root = repository_root();
    let documents = documents(&root);
    assert!(documents.contains(&PathBuf::from("docs/DESIGN.md")), "docs/DESIGN.md is missing: {documents:?}");
    let mut checked = 0;
    let mut problems = Vec::new();
    for document in &documents {
        let markdown = std::fs::read_to_string(root.join(document)).expect("a readable document");
        checked += links(&markdown).len();
        problems.extend(link_problems(&root, document, &markdown));
    }
    assert!(checked >= 20, "only {checked} links found: the extractor is broken");
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn no_document_names_a_file_outside_the_repository() {
    let root = repository_root();
    let mut problems = Vec::new();
    for document in documents(&root) {
        let markdown = std::fs::read_to_string(root.join(&document)).expect("a readable document");
        problems.extend(mention_problems(&document, &markdown));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_link_extractor_finds_links_and_skips_code() {
    let markdown = "\
# Title

See [the spec](DESIGN.md#3-keys) and [`HSM.md`](HSM.md \"title\"), an image ![x](<img.png>),
a [link whose text
spans two lines](two.md), [outer [inner](inner.md)] and [web](https://example.com).
Not links: `[code](code.md)`, \\[escaped](escaped.md), [no target] (gap.md).

```sh
[fenced](fenced.md)
```
";
    let found: Vec<(String, usize)> = links(markdown).into_iter().map(|link| (link.target, link.line)).collect();
    let expected = [
        ("DESIGN.md#3-keys", 3),
        ("HSM.md", 3),
        ("img.png", 3),
        ("two.md", 4),
        ("inner.md", 5),
        ("https://example.com", 5),
    ];
    let expected: Vec<(String, usize)> = expected.iter().map(|(target, line)| ((*target).to_owned(), *line)).collect();
    assert_eq!(found, expected);
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(anchor("7. The issuer's decision, in order"), "7-the-issuers-decision-in-order");
    assert_eq!(
        anchor("The `--send` contract with the merchant's server"),
        "the---send-contract-with-the-merchants-server"
    );
    assert_eq!(anchor("6.1 Reversals (not built yet)"), "61-reversals-not-built-yet");
    let markdown =
        "# A\n\n## Key custody\n\n```\n# not a heading\n```\n    # indented code\n## Key custody\n#nospace\n";
    assert_eq!(anchors(markdown), ["a", "key-custody", "key-custody-1"]);
}

#[test]
fn broken_links_and_outside_mentions_are_reported() {
    let root = repository_root();
    let document = Path::new("docs/EXAMPLE.md");
    let markdown = "\
# Example

## Good

[same file](#good), [sibling](DESIGN.md), [heading](DESIGN.md#3-keys), [up](../README.md),
[folder](../protocol), [web](https://example.com/x.md).

## Bad

[missing](NO-SUCH-FILE.md), [escape](../../outside.md), [absolute](/etc/passwd),
[no heading](#nowhere), [no heading there](HSM.md#no-such-heading), [empty]().
The reference lives in ../shared/DESIGN.md and /work/main; see HSM-FACTS.md.
";
    let problems = link_problems(&root, document, markdown);
    let expected = [
        "docs/EXAMPLE.md:10: link `NO-SUCH-FILE.md` names docs/NO-SUCH-FILE.md, which does not exist",
        "docs/EXAMPLE.md:10: link `../../outside.md` leaves the repository",
        "docs/EXAMPLE.md:10: link `/etc/passwd` is not a relative path inside the repository",
        "docs/EXAMPLE.md:11: link `#nowhere` names the anchor #nowhere, which no heading of docs/EXAMPLE.md has",
        "docs/EXAMPLE.md:11: link `HSM.md#no-such-heading` names the anchor #no-such-heading, which no heading of \
         docs/HSM.md has",
        "docs/EXAMPLE.md:11: link `` is empty",
    ];
    assert_eq!(problems, expected);
    let mentions = mention_problems(document, markdown);
    assert_eq!(
        mentions,
        [
            "docs/EXAMPLE.md:12: mentions `../shared`, outside the repository",
            "docs/EXAMPLE.md:12: mentions `/work/`, outside the repository",
            "docs/EXAMPLE.md:12: mentions `HSM-FACTS`, outside the repository",
        ]
    );
}
