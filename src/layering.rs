//! The check that keeps the house layered: every `crate::X` path in `src/` (comments aside) names
//! a module of a lower layer than the one it is written in ([`crate::LAYERS`]). A module that
//! imports a higher one — the import cycles the model once had — fails this test, with the file,
//! the line and the path.

use std::path::Path;

/// The layer of each top-level module (its index in [`crate::LAYERS`]).
fn layer_of(module: &str) -> Option<usize> {
    crate::LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
}

/// The top-level modules `text` names through `crate::` paths outside comments, with their
/// 1-based line numbers.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` names several: each is checked.
            if name.is_empty() && after.starts_with('{') {
                let group = after[1..].split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").trim();
                    if !item.is_empty() {
                        found.push((number + 1, item.to_owned()));
                    }
                }
            } else if !name.is_empty() {
                found.push((number + 1, name));
            }
            rest = after;
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module in `src/` has a layer, and no module uses one of its own layer or above.
#[test]
fn no_module_imports_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        if matches!(module, "lib" | "main" | "layering") {
            continue;
        }
        let Some(own) = layer_of(module) else {
            wrong.push(format!(
                "src/{module}: not in crate::LAYERS (give it a layer)"
            ));
            continue;
        };
        for (line, used) in crate_paths(&std::fs::read_to_string(file).unwrap()) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(theirs) if theirs < own => {}
                Some(_) => wrong.push(format!(
                    "src/{}:{line}: `{module}` uses `crate::{used}`, which is not below it",
                    relative.display()
                )),
                None => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the layering of crate::LAYERS is broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn paths_are_found_outside_comments_and_in_groups() {
    let text = "use crate::inventory::Host;\n// crate::ui in a comment\nuse crate::{error, tls::pki};\nlet x = crate::text::breaks_line; // crate::lab\n";
    let found: Vec<String> = crate_paths(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["inventory", "error", "tls", "text"]);
}
