//! The sans-IO line, held mechanically (glommio's `tests/linters.rs` is the
//! model): the core decides over bytes, records and a clock value passed
//! in; it opens no socket, reads no clock, spawns no thread, touches no
//! file or database and knows nothing of the shell. Code under
//! `#[cfg(test)]` and comments are not looked at.

use std::path::{Path, PathBuf};

/// The core: codec, authenticators, policy, pools, engine, accounting events, CoA
/// packets and client machine, the data model, text forms.
const CORE: &[&str] = &[
    "src/proto",
    "src/auth",
    "src/policy",
    "src/pool",
    "src/engine",
    "src/accounting",
    "src/coa",
    "src/model",
    "src/text.rs",
];

const FORBIDDEN: &[&str] = &[
    "glommio",
    "UdpSocket",
    "TcpListener",
    "TcpStream",
    "socket2",
    "Instant::now",
    "SystemTime::now",
    "Utc::now",
    "Local::now",
    "rusqlite",
    "tokio",
    "std::fs",
    "std::thread",
    "crate::store",
    "crate::server",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// The code of a file without `#[cfg(test)]` items and comments, with
/// each line's number.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut skip_until: Option<(usize, bool)> = None; // (indent, item has a body)
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some((at, _)) = skip_until {
            let ends = indent == at && (trimmed == "}" || trimmed == "};");
            let one_line = indent == at && !trimmed.starts_with('#') && trimmed.ends_with(';');
            if ends || (one_line && !line.contains('{')) {
                skip_until = None;
            }
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            skip_until = Some((indent, true));
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find(" //") {
            Some(c) => &line[..c],
            None => line,
        };
        out.push((i + 1, code.to_owned()));
    }
    out
}

fn violations(path: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in code_lines(text) {
        for f in FORBIDDEN.iter().filter(|f| line.contains(**f)) {
            found.push(format!("{path}:{n}: `{f}` in the core: {}", line.trim()));
        }
    }
    found
}

#[test]
fn the_core_opens_no_socket_reads_no_clock_and_touches_no_database() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in CORE {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "{files:?}");
    let found: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            violations(&f.strip_prefix(root).unwrap().display().to_string(), &text)
        })
        .collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_sees_what_it_forbids_and_skips_tests_and_comments() {
    let text = "use std::time::Instant;\n\
                // Instant::now is mentioned here only\n\
                fn f() -> Instant { Instant::now() } // tokio in a comment\n\
                #[cfg(test)]\n\
                mod tests {\n    fn g() { let _ = std::fs::read(\"x\"); }\n}\n\
                fn h() { let _ = crate::store::open; }\n";
    let found = violations("x.rs", text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("x.rs:3: `Instant::now`"), "{found:?}");
    assert!(found[1].starts_with("x.rs:8: `crate::store`"), "{found:?}");
}

/// The store and the policy do not import each other any more: the data
/// they share lives in `model`, which imports nothing of the crate.
#[test]
fn the_model_is_a_leaf_and_the_policy_never_names_the_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/model"), &mut files);
    rust_files(&root.join("src/policy"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let model = f.starts_with(root.join("src/model"));
        for (n, line) in code_lines(&text) {
            assert!(!line.contains("crate::store"), "{}:{n}", f.display());
            if model {
                assert!(
                    !line.contains("crate::"),
                    "{}:{n}: model imports {line}",
                    f.display()
                );
            }
        }
    }
}
