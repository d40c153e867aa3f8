//! The project's documents stand alone: every relative link in a Markdown
//! file of the repository leads to a file inside the repository, and none
//! points at the developers' shared folder beside it ([`SHARED`]), which a
//! user who clones the repository does not have.

use std::path::{Path, PathBuf};

/// The developers' folder beside the repository, spelt in two pieces so
/// that this file does not mention it itself.
const SHARED: &str = concat!("..", "/shared");

/// The workspace root (this crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// Every `*.md` under `dir`, skipping build output and git's own files.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if path.is_dir() {
            markdown_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "md") {
            found.push(path);
        }
    }
}

/// The targets of the inline links `[text](target)` of a Markdown text.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].trim().to_string());
        }
    }
    targets
}

#[test]
fn every_relative_link_stays_inside_the_repository() {
    let root = root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("docs/PROTOCOL.md")),
        "the protocol is one of the project's own documents"
    );
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a Markdown file");
        if text.contains(SHARED) {
            broken.push(format!("{}: mentions {SHARED}", file.display()));
        }
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            let dir = file.parent().expect("a file has a parent");
            match dir.join(path).canonicalize() {
                Ok(resolved) if resolved.starts_with(&root) => {}
                Ok(resolved) => broken.push(format!(
                    "{}: {target} leaves the repository ({})",
                    file.display(),
                    resolved.display()
                )),
                Err(_) => broken.push(format!("{}: {target} does not exist", file.display())),
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn link_targets_are_found() {
    assert_eq!(
        link_targets("see [a](docs/A.md) and [b](../x.md#part), not (c)"),
        ["docs/A.md", "../x.md#part"]
    );
}
