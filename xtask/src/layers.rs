//! The layering check: which top-level module of the agent library may
//! import which (`use crate::…` and `crate::…` paths), so the data path
//! stays one way: model <- kernel <- identity <- graph <- policy, with
//! inventory beside identity, the daemon wiring the stages, and the commands
//! on top. `docs/architecture.md` draws the same table.
//!
//! Test modules (`#[cfg(test)] mod …`) are not checked: a test may use the
//! test support of any layer. Comments are not code and are skipped.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Each top-level module and the modules it may import.
pub const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("parallel", &[]),
    ("telemetry", &[]),
    ("kube", &[]),
    ("kernel", &["model", "telemetry"]),
    ("inventory", &["model", "telemetry"]),
    ("identity", &["model", "kernel", "inventory"]),
    (
        "graph",
        &[
            "model",
            "kernel",
            "identity",
            "inventory",
            "kube",
            "telemetry",
            "parallel",
        ],
    ),
    (
        "policy",
        &[
            "model",
            "kernel",
            "identity",
            "inventory",
            "graph",
            "kube",
            "parallel",
        ],
    ),
    ("report", &["model", "graph", "inventory", "policy"]),
    (
        "daemon",
        &[
            "model",
            "kernel",
            "identity",
            "inventory",
            "graph",
            "policy",
            "kube",
            "telemetry",
        ],
    ),
    ("cli", &["model", "graph", "telemetry"]),
    (
        "cmd",
        &[
            "model",
            "kernel",
            "identity",
            "inventory",
            "graph",
            "policy",
            "report",
            "daemon",
            "kube",
            "cli",
            "telemetry",
        ],
    ),
    ("testbed", &["model", "kernel"]),
    (
        "fuzzing",
        &[
            "model",
            "kernel",
            "inventory",
            "graph",
            "policy",
            "daemon",
            "testbed",
        ],
    ),
];

/// Modules that may use `anyhow`: the commands and the test support. The
/// library's layers return their own `thiserror` errors.
const ANYHOW_ALLOWED: &[&str] = &["cmd", "testbed"];

#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Checks every module file under `src` (the library's root; `main.rs`,
/// `lib.rs` and `bin/` are binaries or the module list, not layers).
pub fn check_tree(src: &Path) -> Result<Vec<Violation>, std::io::Error> {
    let mut violations = Vec::new();
    for file in rust_files(src)? {
        let relative = file.strip_prefix(src).unwrap_or(&file);
        let Some(module) = top_module(relative) else {
            continue;
        };
        let text = fs::read_to_string(&file)?;
        violations.extend(check_source(&module, &file, &text));
    }
    Ok(violations)
}

/// The top-level module a file under `src` belongs to, `None` for the crate
/// root and the binaries.
fn top_module(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "main.rs" | "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The violations in one file of `module`.
pub fn check_source(module: &str, file: &Path, text: &str) -> Vec<Violation> {
    let violation = |line: usize, message: String| Violation {
        file: file.to_path_buf(),
        line,
        message,
    };
    let table: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let Some(allowed) = table.get(module) else {
        return vec![violation(
            1,
            format!(
                "top-level module `{module}` is not in the layering table (xtask/src/layers.rs, docs/architecture.md): say what it may import"
            ),
        )];
    };
    let code = production_code(text);
    let mut violations = Vec::new();
    for (line, target) in crate_imports(&code) {
        if target != module && !allowed.contains(&target.as_str()) {
            violations.push(violation(
                line,
                format!(
                    "`{module}` imports `{target}`; {module} may import only: {}",
                    if allowed.is_empty() {
                        "nothing in the crate".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
    }
    if !ANYHOW_ALLOWED.contains(&module) {
        for (index, line) in code.lines().enumerate() {
            if line.contains("anyhow") {
                violations.push(violation(
                    index + 1,
                    format!(
                        "`{module}` uses anyhow; library layers return their own thiserror errors (anyhow is for {})",
                        ANYHOW_ALLOWED.join(", ")
                    ),
                ));
            }
        }
    }
    violations
}

/// The text without comments and without `#[cfg(test)]` modules; line
/// numbers are kept (removed text becomes blank lines).
fn production_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") || next.contains(" mod "))
        {
            // Skip the attribute and the module up to its closing brace.
            out.push('\n');
            let mut depth = 0i32;
            let mut opened = false;
            for line in lines.by_ref() {
                out.push('\n');
                for ch in strip_comment(line).chars() {
                    match ch {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth <= 0 {
                    break;
                }
            }
            continue;
        }
        out.push_str(strip_comment(line));
        out.push('\n');
    }
    out
}

/// A line without its `//` comment (a `//` inside a string literal is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut previous = ' ';
    for (index, ch) in line.char_indices() {
        match ch {
            '"' if previous != '\\' => in_string = !in_string,
            '/' if !in_string && previous == '/' => return &line[..index - 1],
            _ => {}
        }
        previous = ch;
    }
    line
}

/// Every top-level module named after `crate::` (directly, or in a
/// `crate::{a::…, b}` group), with its line number.
fn crate_imports(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut search = 0;
    while let Some(offset) = code[search..].find("crate::") {
        let start = search + offset;
        search = start + "crate::".len();
        // `netflow_crate::` or `some_crate::` is another path.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let rest = &code[search..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut expecting_name = true;
            for (index, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expecting_name = true,
                    c if expecting_name && depth == 1 && (c.is_alphabetic() || c == '_') => {
                        let name = identifier(&group[index..]);
                        if name != "self" {
                            found.push((line_of(search + 1 + index), name.to_string()));
                        }
                        expecting_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                found.push((line_of(start), name.to_string()));
            }
        }
    }
    found
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A cycle in the table itself, if any (the table must be a DAG).
pub fn table_cycle() -> Option<Vec<&'static str>> {
    fn visit(
        module: &'static str,
        table: &BTreeMap<&'static str, &'static [&'static str]>,
        path: &mut Vec<&'static str>,
        done: &mut BTreeSet<&'static str>,
    ) -> Option<Vec<&'static str>> {
        if let Some(start) = path.iter().position(|m| *m == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module);
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in table.get(module).copied().unwrap_or_default() {
            if let Some(cycle) = visit(next, table, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let table: BTreeMap<&'static str, &'static [&'static str]> = ALLOWED.iter().copied().collect();
    let mut done = BTreeSet::new();
    for module in table.keys() {
        if let Some(cycle) = visit(module, &table, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(module: &str, text: &str) -> Vec<String> {
        check_source(module, Path::new("x.rs"), text)
            .into_iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn a_back_edge_fails() {
        // The deliberate bad import: the graph reaching up into the CLI, as
        // graph pull once did.
        let found = check(
            "graph",
            "use super::CommGraph;\n\nuse crate::cli::PullArgs;\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("x.rs:3: `graph` imports `cli`"),
            "{found:?}"
        );
        // Identity reaching up into the graph, in a group import.
        let found = check(
            "identity",
            "use crate::{\n    graph::{Endpoint, EndpointKind},\n    inventory::Inventory,\n};\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("x.rs:2: `identity` imports `graph`"),
            "{found:?}"
        );
        // A path in code, not in a `use`.
        let found = check("policy", "fn f() { crate::daemon::run(&o); }\n");
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn allowed_edges_comments_and_tests_pass() {
        let text = "//! Uses [`crate::cmd`] in a doc comment only.\n\
                    use crate::{\n    model::{Endpoint, Protocol},\n    kernel::reader::FlowReader,\n    identity::{self, Identity},\n};\n\
                    fn f() -> crate::graph::CommGraph { todo!() } // crate::cli in a comment\n\
                    #[cfg(test)]\nmod tests {\n    use crate::cli::Cli;\n    fn g() { let _ = anyhow::anyhow!(\"x\"); }\n}\n";
        assert_eq!(check("graph", text), Vec::<String>::new());
        // Another crate's path is not ours.
        assert_eq!(
            check("model", "use some_crate::graph;\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn anyhow_stays_in_the_commands() {
        assert_eq!(
            check("daemon", "fn f() -> anyhow::Result<()> { Ok(()) }\n").len(),
            1
        );
        assert!(check("cmd", "fn f() -> anyhow::Result<()> { Ok(()) }\n").is_empty());
    }

    #[test]
    fn an_unknown_module_must_be_placed() {
        let found = check("helpers", "");
        assert!(found[0].contains("not in the layering table"), "{found:?}");
    }

    #[test]
    fn the_table_has_no_cycle_and_only_cmd_imports_cli() {
        assert_eq!(table_cycle(), None);
        for (module, allowed) in ALLOWED {
            if *module != "cmd" {
                assert!(!allowed.contains(&"cli"), "{module} may not import cli");
            }
        }
    }

    #[test]
    fn the_agent_follows_the_table() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netflow-agent/src");
        let violations = check_tree(&src).unwrap();
        assert!(
            violations.is_empty(),
            "{}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
