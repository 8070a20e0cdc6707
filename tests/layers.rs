//! The source tree's shape, checked: no import cycle between files of `src/`, and no file
//! imports a file of a higher layer. `LAYERS` is the one table of the layering; README
//! "Development" and docs/ARCHITECTURE.md describe the same table.
//!
//! Imports are read as text: every `crate::` path outside comments, with `use` groups
//! (`crate::a::{b, c::d}`) expanded, resolved to the file that defines the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Path prefix under `src/` → layer, lowest first. A file may import its own layer and the
/// ones below it, never one above.
const LAYERS: &[(&str, u8)] = &[
    // core: the error and finding types everything returns
    ("error.rs", 0),
    // execution: the process runner, signals, servers pgleap starts, the owner re-exec
    ("exec/", 1),
    // facts: read-only inspection, host layouts and service managers, configuration files
    ("inspect/", 2),
    ("host/", 2),
    ("config/", 2),
    // decisions: the plan and every preflight check
    ("plan/", 3),
    ("preflight/", 3),
    // what the user reads
    ("ui/", 4),
    // where an upgrade stands
    ("state/", 5),
    // what an upgrade does, and undoes
    ("steps/", 6),
    // the surface
    ("cli.rs", 7),
    ("cmd/", 7),
    ("main.rs", 7),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// `src/plan/mod.rs` → `plan`, `src/exec/process.rs` → `exec/process`.
fn module_of(rel: &str) -> String {
    let m = rel.trim_end_matches(".rs");
    let m = m.strip_suffix("/mod").unwrap_or(m);
    if m == "main" { String::new() } else { m.into() }
}

fn layer_of(rel: &str) -> u8 {
    LAYERS
        .iter()
        .filter(|(prefix, _)| rel.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or_else(
            || panic!("src/{rel} is in no layer: add its folder to LAYERS"),
            |(_, l)| *l,
        )
}

/// Code without comments (string contents are kept: they never hold `crate::`).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…` path in `code`, `use` groups expanded, as module-path segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        expand(rest, &mut Vec::new(), &mut out);
    }
    out
}

/// Reads one path (`a::b::{c, d::e}`) at the start of `text` onto `prefix`.
fn expand(text: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut pos = 0;
    let bytes = text.as_bytes();
    let depth = prefix.len();
    loop {
        let start = pos;
        while pos < bytes.len() && (bytes[pos].is_ascii_alphanumeric() || bytes[pos] == b'_') {
            pos += 1;
        }
        if pos > start {
            prefix.push(text[start..pos].to_string());
        }
        if text[pos..].starts_with("::{") {
            pos += 3;
            loop {
                while text[pos..].starts_with(|c: char| c.is_whitespace() || c == ',') {
                    pos += 1;
                }
                if text[pos..].starts_with('}') {
                    pos += 1;
                    break;
                }
                pos += expand(&text[pos..], prefix, out);
            }
            break;
        } else if text[pos..].starts_with("::") {
            pos += 2;
        } else {
            out.push(prefix.clone());
            break;
        }
    }
    prefix.truncate(depth);
    pos
}

struct Tree {
    /// module path (`exec/process`) → file (`exec/process.rs`)
    files: BTreeMap<String, String>,
    /// file → files it imports
    imports: BTreeMap<String, BTreeSet<String>>,
}

fn tree() -> Tree {
    let root = src();
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    let mut files = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for p in &paths {
        let rel = p
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        files.insert(module_of(&rel), rel.clone());
        texts.insert(rel, std::fs::read_to_string(p).unwrap());
    }
    let mut imports = BTreeMap::new();
    for (rel, text) in &texts {
        let mut deps = BTreeSet::new();
        for segs in crate_paths(&strip_comments(text)) {
            // The longest prefix of the path that names a file's module.
            let target = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("/"))
                .find_map(|m| files.get(&m).cloned())
                .unwrap_or_else(|| files[""].clone());
            if &target != rel && target != "main.rs" {
                deps.insert(target);
            }
        }
        imports.insert(rel.clone(), deps);
    }
    Tree { files, imports }
}

#[test]
fn every_file_is_in_a_layer() {
    for file in tree().files.values() {
        layer_of(file);
    }
}

#[test]
fn no_file_imports_a_higher_layer() {
    let t = tree();
    let mut upward = Vec::new();
    for (file, deps) in &t.imports {
        for dep in deps {
            if layer_of(dep) > layer_of(file) {
                upward.push(format!(
                    "src/{file} (layer {}) imports src/{dep} (layer {})",
                    layer_of(file),
                    layer_of(dep)
                ));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

// Depth-first search; a back edge closes a cycle, reported as the path around it.
fn visit(
    f: &str,
    t: &Tree,
    stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    cycles: &mut Vec<String>,
) {
    if let Some(i) = stack.iter().position(|s| s == f) {
        let mut c = stack[i..].to_vec();
        c.push(f.to_string());
        cycles.push(c.join(" → "));
        return;
    }
    if done.contains(f) {
        return;
    }
    stack.push(f.to_string());
    for d in &t.imports[f] {
        visit(d, t, stack, done, cycles);
    }
    stack.pop();
    done.insert(f.to_string());
}

#[test]
fn no_import_cycle_between_files() {
    let t = tree();
    let mut done = BTreeSet::new();
    let mut cycles = Vec::new();
    for f in t.imports.keys() {
        visit(f, &t, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_reader_sees_imports_the_compiler_sees() {
    // The checker itself: a grouped use and a qualified call are both found, comments are not.
    let code = strip_comments(
        "use crate::a::{b, c::{d, e}};\n// crate::z\nfn f() { crate::x::y(); }\nmy_crate::q",
    );
    let got: Vec<String> = crate_paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(got, ["a::b", "a::c::d", "a::c::e", "x::y"]);
}
