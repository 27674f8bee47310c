//! The layer map of ARCHITECTURE.md, checked against the code: every `crate::` path in `src/`
//! (including the items of `use crate::{…}` groups) must go from a folder to one the map allows,
//! and no two files of one folder may import each other. The allowed map is read from the
//! ```` ```text layers ```` block of ARCHITECTURE.md, so the document and the code cannot drift.

mod common;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `folder -> allowed folders`, from ARCHITECTURE.md.
fn allowed_map() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(common::repo_dir().join("ARCHITECTURE.md")).unwrap();
    let start = doc.find("```text layers\n").expect("ARCHITECTURE.md has a ```text layers block") + "```text layers\n".len();
    let end = doc[start..].find("```").unwrap() + start;
    let mut map = BTreeMap::new();
    for line in doc[start..end].lines().filter(|l| !l.trim().is_empty()) {
        let (from, to) = line.split_once("->").unwrap_or_else(|| panic!("layers line without '->': {line}"));
        let to: BTreeSet<String> = to.split_whitespace().filter(|w| *w != "-").map(String::from).collect();
        map.insert(from.trim().to_string(), to);
    }
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layer a file of `src/` belongs to: its top folder, or the file's stem at the top.
fn layer_of(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// Code without comments (line comments and doc comments), so prose naming paths is ignored,
/// and without the unit tests at the end of the file (`#[cfg(test)]`), which may use anything.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The first path segment (and the second, for same-folder edges) of every `crate::` path.
fn crate_paths(code: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if after.starts_with('{') {
            // A group: take each top-level item's first segment (and second, when it has one).
            let mut depth = 0;
            let mut item_start = 1;
            for (j, c) in after.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        let item = after[item_start..j].trim();
                        let first = ident_at(item);
                        if !first.is_empty() {
                            let second = item[first.len()..].strip_prefix("::").map(|x| ident_at(x).to_string());
                            out.push((first.to_string(), second.filter(|s| !s.is_empty())));
                        }
                        item_start = j + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else {
            let first = ident_at(after);
            let second = after[first.len()..].strip_prefix("::").map(|x| ident_at(x).to_string());
            out.push((first.to_string(), second.filter(|s| !s.is_empty())));
        }
        rest = after;
    }
    out
}

#[test]
fn imports_follow_the_layer_map_of_architecture_md() {
    let allowed = allowed_map();
    let src = common::repo_dir().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    let mut seen_layers = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let from = layer_of(rel);
        if from == "lib" || from == "bin" {
            continue; // the crate root declares the modules; binaries use the public API (vws::).
        }
        seen_layers.insert(from.clone());
        let Some(ok) = allowed.get(&from) else {
            bad.push(format!("{}: layer '{from}' is not in ARCHITECTURE.md's map", rel.display()));
            continue;
        };
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        if code.contains("super::super::") {
            bad.push(format!("{}: super::super:: crosses folders without naming them; use crate::", rel.display()));
        }
        for (to, _) in crate_paths(&code) {
            if to != from && !ok.contains(&to) {
                bad.push(format!("{}: {from} -> {to} is not allowed by ARCHITECTURE.md", rel.display()));
            }
        }
    }
    for l in allowed.keys() {
        assert!(seen_layers.contains(l), "ARCHITECTURE.md names layer '{l}' but src/ has no such folder or file");
    }
    assert!(bad.is_empty(), "layering violations:\n  {}", bad.join("\n  "));
}

#[test]
fn no_two_files_of_a_folder_import_each_other() {
    let src = common::repo_dir().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // (folder, file stem) -> sibling stems it uses
    let mut uses: BTreeMap<(PathBuf, String), BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let dir = f.parent().unwrap().to_path_buf();
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        if stem == "mod" || dir == src {
            continue;
        }
        let folder_name = dir.file_name().unwrap().to_string_lossy().to_string();
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        let mut set = BTreeSet::new();
        let mut rest = code.as_str();
        while let Some(i) = rest.find("super::") {
            let after = &rest[i + "super::".len()..];
            if after.starts_with('{') {
                let end = after.find('}').unwrap_or(after.len());
                for item in after[1..end].split(',') {
                    set.insert(ident_at(item.trim()).to_string());
                }
            } else {
                set.insert(ident_at(after).to_string());
            }
            rest = after;
        }
        for (first, second) in crate_paths(&code) {
            if first == folder_name {
                if let Some(s) = second {
                    set.insert(s);
                }
            }
        }
        set.remove(&stem);
        uses.insert((dir, stem), set);
    }
    let mut cycles = Vec::new();
    for ((dir, a), used) in &uses {
        for b in used {
            if a < b && uses.get(&(dir.clone(), b.clone())).is_some_and(|u| u.contains(a)) {
                cycles.push(format!("{}: {a}.rs <-> {b}.rs", dir.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(cycles.is_empty(), "files importing each other:\n  {}", cycles.join("\n  "));
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    // The parser itself: a violation hidden in a group or a nested path is found.
    let code =
        "use crate::{soap::xml::QName, config::Config};\nfn f() { crate::store::Store::open(p); }\n// crate::app in a comment\n";
    let found: Vec<String> = crate_paths(&code_of(code)).into_iter().map(|(a, _)| a).collect();
    assert_eq!(found, vec!["soap", "config", "store"]);
}
