//! Unit-test generation for Rust crates. The generated file becomes a `#[cfg(test)]` module of
//! the target function's module (declared by a line appended to the target's file), so its
//! tests see what the crate's own unit tests see, private items included, and run with
//! `cargo test --lib`.
//!
//! The gold file is assembled from the crate's own tests that catch the function's bugs: inline
//! `#[cfg(test)]` modules (moved in as nested modules, their `super::` paths re-pointed), doc
//! tests of the items involved (each code block a `#[test]`), and integration-test files (the
//! crate's name turned into `crate`). The instance validation then proves the result: it must
//! pass on the original code and kill every kept mutant, or the instance is not written.

use std::collections::BTreeSet;

use mutate::RustItem;

/// The name of the generated module and of its file beside the target's file.
pub const MODULE: &str = "atomskill_tests";

/// Which library module each source file is, found as rustc finds them: from `lib.rs` through
/// every `mod name;` declaration, `#[path = "..."]` attributes included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    by_file: std::collections::BTreeMap<String, String>,
    /// Files of modules declared as test code (`#[cfg(test)] mod tests;`).
    test_files: BTreeSet<String>,
}

impl Modules {
    /// Walks the library rooted at `<source_dir>/lib.rs`.
    pub fn resolve(sources: &dyn Sources, source_dir: &str) -> Modules {
        let dir = source_dir.trim_end_matches('/');
        let root = if dir.is_empty() || dir == "." {
            "lib.rs".to_string()
        } else {
            format!("{dir}/lib.rs")
        };
        let mut modules = Modules::default();
        // (file, module path, whether the file owns its directory: lib.rs, mod.rs, #[path]).
        let mut queue = vec![(root, String::new(), true, false)];
        while let Some((file, module, owns_dir, test)) = queue.pop() {
            if modules.by_file.contains_key(&file) || modules.by_file.len() > 10_000 {
                continue;
            }
            let Some(text) = sources.read(&file) else {
                continue;
            };
            modules.by_file.insert(file.clone(), module.clone());
            if test {
                modules.test_files.insert(file.clone());
            }
            let Ok(items) = mutate::rust_items(&text) else {
                continue;
            };
            let parent = file.rsplit_once('/').map_or("", |(d, _)| d);
            let stem = file
                .rsplit('/')
                .next()
                .unwrap_or(&file)
                .trim_end_matches(".rs");
            let child_dir = if owns_dir || stem == "mod" {
                parent.to_string()
            } else if parent.is_empty() {
                stem.to_string()
            } else {
                format!("{parent}/{stem}")
            };
            // Only declarations at the file's top level (not inside inline modules).
            for item in items
                .iter()
                .filter(|i| i.kind == "mod" && i.body.is_none() && !i.path.contains("::"))
            {
                let child = if module.is_empty() {
                    item.name.clone()
                } else {
                    format!("{module}::{}", item.name)
                };
                let join = |dir: &str, rel: &str| {
                    if dir.is_empty() {
                        rel.to_string()
                    } else {
                        format!("{dir}/{rel}")
                    }
                };
                match path_attribute(&text[item.start_byte..item.end_byte]) {
                    Some(path) => {
                        queue.push((normalise(&join(parent, &path)), child, true, item.test))
                    }
                    None => {
                        let flat = join(&child_dir, &format!("{}.rs", item.name));
                        let nested = join(&child_dir, &format!("{}/mod.rs", item.name));
                        if sources.read(&flat).is_some() {
                            queue.push((flat, child, false, item.test));
                        } else {
                            queue.push((nested, child, true, item.test));
                        }
                    }
                }
            }
        }
        modules
    }

    /// The module path of a library file ("" for the root); None if no `mod` reaches it.
    pub fn module_of(&self, file: &str) -> Option<&str> {
        self.by_file.get(file).map(String::as_str)
    }

    /// Whether the file's module is declared as test code.
    pub fn is_test_file(&self, file: &str) -> bool {
        self.test_files.contains(file)
    }

    /// The file a module is declared in (inline modules are not files: None).
    pub fn file_of(&self, module: &str) -> Option<&str> {
        self.by_file
            .iter()
            .find(|(_, m)| m.as_str() == module)
            .map(|(f, _)| f.as_str())
    }
}

/// The value of a `#[path = "..."]` attribute in an item's text.
fn path_attribute(item: &str) -> Option<String> {
    let at = item.find("#[path")?;
    let rest = &item[at..];
    let open = rest.find('"')?;
    let close = rest[open + 1..].find('"')?;
    Some(rest[open + 1..open + 1 + close].to_string())
}

/// `a/./b/../c.rs` → `a/c.rs`.
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Where the generated file goes: beside the target's file (a `#[path]` in a file that is not a
/// `mod.rs` resolves from that file's directory too).
pub fn grade_path(target_file: &str) -> String {
    match target_file.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{MODULE}.rs"),
        None => format!("{MODULE}.rs"),
    }
}

/// The declaration appended to the target's file.
pub fn declaration() -> String {
    format!("\n#[cfg(test)]\n#[path = \"{MODULE}.rs\"]\nmod {MODULE};\n")
}

/// `source` with the declaration appended.
pub fn wired(source: &str) -> String {
    format!("{}{}", source, declaration())
}

/// The id prefix of the generated tests for a target in `module`.
pub fn test_prefix(module: &str) -> String {
    if module.is_empty() {
        format!("lib::{MODULE}::")
    } else {
        format!("lib::{module}::{MODULE}::")
    }
}

/// Replaces the path segment `from::` by `to::` where it starts a path (not inside a longer
/// identifier or after `$`/`::`).
fn repoint(text: &str, from: &str, to: &str) -> String {
    let needle = format!("{from}::");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().next_back();
        let starts_path = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
            && !rest[..at].ends_with("::");
        out.push_str(&rest[..at]);
        if starts_path {
            out.push_str(to);
            out.push_str("::");
        } else {
            out.push_str(&needle);
        }
        rest = &rest[at + needle.len()..];
    }
    out.push_str(rest);
    out
}

/// Code written against the crate from outside (doc tests, integration tests) made to compile
/// inside it: `name::x` → `crate::x`, `extern crate name;` and inner attributes dropped.
fn as_internal(code: &str, crate_name: &str) -> String {
    let mut lines = Vec::new();
    for line in code.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("#![")
            || trimmed == format!("extern crate {crate_name};")
            || trimmed == format!("use {crate_name};")
        {
            continue;
        }
        lines.push(line);
    }
    repoint(&lines.join("\n"), crate_name, "crate")
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{by}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Opens a module of code written as a standalone program (a doc test, an integration test):
/// the standard library's prelude and macros, which a `#![no_std]` crate's modules lack.
const STD_PRELUDE: &str = "extern crate std;\n#[allow(unused_imports)]\nuse std::prelude::rust_2021::*;\n#[allow(unused_imports)]\nuse std::{eprint, eprintln, format, print, println, vec};";

/// A doc-test code block as rustdoc would compile it; None for blocks rustdoc does not run as
/// a passing test (`ignore`, `no_run`, `compile_fail`, other languages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocTest {
    pub code: String,
    pub should_panic: bool,
}

/// The runnable code blocks of a doc comment, hidden `# ` lines restored.
pub fn doc_tests(docs: &str) -> Vec<DocTest> {
    let mut out = Vec::new();
    let mut lines = docs.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed
            .strip_prefix("```")
            .or_else(|| trimmed.strip_prefix("~~~"))
        else {
            continue;
        };
        let fence = &trimmed[..3];
        let words: Vec<&str> = info
            .split([',', ' '])
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .collect();
        let runs = words.iter().all(|w| {
            matches!(*w, "rust" | "should_panic" | "test_harness") || w.starts_with("edition")
        });
        let mut code = Vec::new();
        for line in lines.by_ref() {
            if line.trim_start().starts_with(fence) {
                break;
            }
            code.push(line);
        }
        if !runs || words.contains(&"test_harness") {
            continue;
        }
        let code: Vec<String> = code
            .into_iter()
            .map(|line| {
                let t = line.trim_start();
                if t == "#" {
                    String::new()
                } else if let Some(rest) = t.strip_prefix("# ") {
                    rest.to_string()
                } else if let Some(rest) = t.strip_prefix("##") {
                    format!("#{rest}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        out.push(DocTest {
            code: code.join("\n"),
            should_panic: words.contains(&"should_panic"),
        });
    }
    out
}

/// One doc test as a `#[test]` function named `name`.
fn doc_test_function(test: &DocTest, name: &str, crate_name: &str) -> Option<String> {
    // Inner attributes (`#![...]`) apply to rustdoc's whole generated crate: no equivalent.
    if test.code.contains("#![") {
        return None;
    }
    let code = as_internal(&test.code, crate_name);
    let attribute = if test.should_panic {
        "#[test]\n#[should_panic]"
    } else {
        "#[test]"
    };
    let trimmed = code.trim_end();
    let body = if code.contains("fn main()") {
        let call = if code.contains("fn main() ->") {
            "main().unwrap();"
        } else {
            "main();"
        };
        format!("{code}\n{call}")
    } else if let Some(start) = trimmed.rfind("Ok::<") {
        // `?` in a doc test: rustdoc wraps it in a function returning the block's result.
        if !trimmed.ends_with("(())") {
            return None;
        }
        format!(
            "let result = (|| {{\n{}\n}})();\nresult.unwrap();",
            indent(&trimmed[..start], "    ") + "\n    " + &trimmed[start..]
        )
    } else {
        code.clone()
    };
    Some(format!(
        "{attribute}\nfn {name}() {{\n{}\n}}",
        indent(&body, "    ")
    ))
}

/// A crate's own tests, read from its pristine files.
pub trait Sources {
    fn read(&self, path: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Sources for F {
    fn read(&self, path: &str) -> Option<String> {
        self(path)
    }
}

/// The gold test module and what it holds.
#[derive(Debug, Clone, Default)]
pub struct Gold {
    pub text: String,
    /// The F2P ids whose test is in the file.
    pub covered: BTreeSet<String>,
    /// Inline test modules moved in: (file, start byte, end byte) of the whole item, to hide
    /// from the agent.
    pub moved: Vec<(String, usize, usize)>,
}

/// Assembles the gold module for a target in `target_module` from the tests behind `ids`
/// (fail-to-pass ids of the function's bugs). `crate_name` is the library's name as code uses
/// it.
pub fn gold(
    sources: &dyn Sources,
    modules: &Modules,
    crate_name: &str,
    target_module: &str,
    ids: &BTreeSet<String>,
) -> Gold {
    let mut gold = Gold::default();
    let mut sections: Vec<String> = Vec::new();
    let mut parsed: std::collections::BTreeMap<String, Option<(String, Vec<RustItem>)>> =
        Default::default();
    let mut items_of = |file: &str| -> Option<(String, Vec<RustItem>)> {
        parsed
            .entry(file.to_string())
            .or_insert_with(|| {
                let text = sources.read(file)?;
                let items = mutate::rust_items(&text).ok()?;
                Some((text, items))
            })
            .clone()
    };
    // Inline unit-test modules: `lib::a::tests::t` lives in module `a::tests`.
    let mut modules_done: BTreeSet<String> = BTreeSet::new();
    let mut module_names: BTreeSet<String> = BTreeSet::new();
    for id in ids {
        let Some(path) = id.strip_prefix("lib::") else {
            continue;
        };
        let Some((module, _test)) = path.rsplit_once("::") else {
            continue;
        };
        if modules_done.contains(module) {
            gold.covered.insert(id.clone());
            continue;
        }
        let segments: Vec<&str> = module.split("::").collect();
        // Split the module path into a file module and a path inside that file.
        let mut found = None;
        for split in (0..=segments.len()).rev() {
            let file_module = segments[..split].join("::");
            let inner = segments[split..].join("::");
            let Some(file) = modules.file_of(&file_module) else {
                continue;
            };
            let Some((text, items)) = items_of(file) else {
                continue;
            };
            if inner.is_empty() {
                if !modules.is_test_file(file) {
                    continue;
                }
                // A test module in a file of its own (`#[cfg(test)] mod tests;`): all of it.
                found = Some((file.to_string(), text.clone(), (0, text.len())));
                break;
            }
            if let Some(item) = items
                .iter()
                .find(|i| i.kind == "mod" && i.test && i.path == inner)
            {
                if let Some((a, b)) = item.body {
                    let span = (item.start_byte, item.end_byte);
                    found = Some((file.to_string(), text[a..b].to_string(), span));
                }
            }
            if found.is_some() {
                break;
            }
        }
        let Some((file, body, (cut_start, cut_end))) = found else {
            continue;
        };
        // `mod x;` inside would be looked up relative to the new module's place: leave it.
        let declares_files = mutate::rust_items(&body)
            .map(|items| items.iter().any(|i| i.kind == "mod" && i.body.is_none()))
            .unwrap_or(true);
        if declares_files {
            continue;
        }
        modules_done.insert(module.to_string());
        gold.covered.insert(id.clone());
        // The module's parent, which its `super::` means.
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let body = if parent == target_module {
            repoint(&body, "super", "super::super")
        } else if parent.is_empty() {
            repoint(&body, "super", "crate")
        } else {
            repoint(&body, "super", &format!("crate::{parent}"))
        };
        let mut name = module.replace("::", "_");
        while !module_names.insert(name.clone()) {
            name.push('_');
        }
        sections.push(format!(
            "// The crate's own tests from `{module}` ({file}).\nmod {name} {{{body}}}"
        ));
        gold.moved.push((file, cut_start, cut_end));
    }
    // Doc tests: `doc::src/a.rs - a::Item::method`, maybe with ` #2`.
    let mut doc_functions: Vec<String> = Vec::new();
    let mut doc_items_done: BTreeSet<(String, String)> = BTreeSet::new();
    for id in ids {
        let Some(rest) = id.strip_prefix("doc::") else {
            continue;
        };
        let Some((file, item_path)) = rest.split_once(" - ") else {
            continue;
        };
        let item_path = item_path.split(" #").next().unwrap_or(item_path).trim();
        let Some((_, items)) = items_of(file) else {
            continue;
        };
        let Some(file_module) = modules.module_of(file) else {
            continue;
        };
        let item = items.iter().find(|i| {
            let full = if file_module.is_empty() {
                i.path.clone()
            } else {
                format!("{file_module}::{}", i.path)
            };
            i.docs.is_some() && full == item_path
        });
        let Some(item) = item else {
            continue;
        };
        let key = (file.to_string(), item.path.clone());
        if !doc_items_done.insert(key) {
            gold.covered.insert(id.clone());
            continue;
        }
        let tests = doc_tests(item.docs.as_deref().unwrap_or(""));
        let mut any = false;
        for (k, test) in tests.iter().enumerate() {
            let name = format!("{}_{}", item.path.replace("::", "_").to_lowercase(), k + 1);
            if let Some(function) = doc_test_function(test, &name, crate_name) {
                doc_functions.push(function);
                any = true;
            }
        }
        if any {
            gold.covered.insert(id.clone());
        }
    }
    if !doc_functions.is_empty() {
        sections.push(format!(
            "// The doc tests of the items involved, as unit tests.\n#[allow(unused_imports, unused_variables, unused_mut, dead_code)]\nmod doc_tests {{\n{}\n\n{}\n}}",
            indent(STD_PRELUDE, "    "),
            indent(&doc_functions.join("\n\n"), "    ")
        ));
    }
    // Integration-test files: `tests/it.rs::t`.
    let mut files_done: BTreeSet<String> = BTreeSet::new();
    for id in ids {
        let Some((file, _)) = id.split_once("::") else {
            continue;
        };
        if !(file.starts_with("tests/") && file.ends_with(".rs")) {
            continue;
        }
        if files_done.contains(file) {
            gold.covered.insert(id.clone());
            continue;
        }
        let Some(text) = sources.read(file) else {
            continue;
        };
        files_done.insert(file.to_string());
        gold.covered.insert(id.clone());
        let stem = file
            .trim_start_matches("tests/")
            .trim_end_matches(".rs")
            .replace(['/', '-', '.'], "_");
        sections.push(format!(
            "// The crate's integration tests from {file}.\nmod it_{stem} {{\n{}\n\n{}\n}}",
            indent(STD_PRELUDE, "    "),
            indent(&as_internal(&text, crate_name), "    ")
        ));
    }
    if !sections.is_empty() {
        gold.text = format!(
            "//! Unit tests of the target, compiled as a test module beside it.\n\n{}\n",
            sections.join("\n\n")
        );
    }
    gold
}

/// `source` with the byte ranges removed (the crate's own test modules the gold file holds).
pub fn without(source: &str, ranges: &[(usize, usize)]) -> String {
    let mut ranges = ranges.to_vec();
    ranges.sort();
    let mut out = String::new();
    let mut at = 0;
    for (a, b) in ranges {
        if a < at || b > source.len() {
            continue;
        }
        out.push_str(&source[at..a]);
        at = b;
    }
    out.push_str(&source[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_follow_declarations_and_path_attributes() {
        let files: std::collections::BTreeMap<&str, &str> = [
            ("src/lib.rs", "mod a;\nmod b;\n#[path = \"gen/tables.rs\"]\nmod tables;\nmod inline { mod ignored; }\n"),
            ("src/a.rs", "pub mod x;\n#[cfg(test)]\nmod tests;\n"),
            ("src/a/x.rs", "pub fn f() {}\n"),
            ("src/a/tests.rs", "#[test]\nfn t() {}\n"),
            ("src/b/mod.rs", "mod y;\n"),
            ("src/b/y.rs", ""),
            ("src/gen/tables.rs", "mod z;\n"),
            ("src/gen/z.rs", ""),
            ("src/main.rs", ""),
        ]
        .into_iter()
        .collect();
        let read = |path: &str| files.get(path).map(|t| t.to_string());
        let modules = Modules::resolve(&read, "src");
        for (file, module) in [
            ("src/lib.rs", Some("")),
            ("src/a.rs", Some("a")),
            ("src/a/x.rs", Some("a::x")),
            ("src/a/tests.rs", Some("a::tests")),
            ("src/b/mod.rs", Some("b")),
            ("src/b/y.rs", Some("b::y")),
            ("src/gen/tables.rs", Some("tables")),
            ("src/gen/z.rs", Some("tables::z")),
            ("src/main.rs", None),
        ] {
            assert_eq!(modules.module_of(file), module, "{file}");
        }
        assert_eq!(modules.file_of("tables"), Some("src/gen/tables.rs"));
        assert!(modules.is_test_file("src/a/tests.rs"));
        assert!(!modules.is_test_file("src/a/x.rs"));
        assert_eq!(grade_path("src/a/b.rs"), "src/a/atomskill_tests.rs");
        assert_eq!(test_prefix(""), "lib::atomskill_tests::");
        assert_eq!(test_prefix("a::b"), "lib::a::b::atomskill_tests::");
    }

    #[test]
    fn repointing_paths() {
        for (text, expected) in [
            ("use strsim::levenshtein;", "use crate::levenshtein;"),
            (
                "strsim::f(a) + my_strsim::g()",
                "crate::f(a) + my_strsim::g()",
            ),
            ("x::strsim::y", "x::strsim::y"),
            ("$strsim::z", "$strsim::z"),
        ] {
            assert_eq!(repoint(text, "strsim", "crate"), expected, "{text}");
        }
        assert_eq!(
            repoint("use super::*; super::f()", "super", "super::super"),
            "use super::super::*; super::super::f()"
        );
    }

    #[test]
    fn doc_test_blocks() {
        let docs = "Says hi.\n\n```\n# use demo::hi;\nassert_eq!(hi(), \"hi\");\n```\n\n```ignore\nnot run\n```\n\n```should_panic\ndemo::boom();\n```\n\n```text\nplain\n```\n\n```rust,no_run\nloop {}\n```";
        let tests = doc_tests(docs);
        assert_eq!(
            tests,
            vec![
                DocTest {
                    code: "use demo::hi;\nassert_eq!(hi(), \"hi\");".into(),
                    should_panic: false
                },
                DocTest {
                    code: "demo::boom();".into(),
                    should_panic: true
                },
            ]
        );
        let function = doc_test_function(&tests[1], "boom_1", "demo").unwrap();
        assert_eq!(
            function,
            "#[test]\n#[should_panic]\nfn boom_1() {\n    crate::boom();\n}"
        );
        let question = DocTest {
            code: "let n: u32 = \"4\".parse()?;\nassert_eq!(n, 4);\nOk::<(), std::num::ParseIntError>(())".into(),
            should_panic: false,
        };
        let function = doc_test_function(&question, "parse_1", "demo").unwrap();
        assert!(function.contains("let result = (|| {"), "{function}");
        assert!(function.contains("result.unwrap();"), "{function}");
    }

    #[test]
    fn removing_ranges() {
        assert_eq!(without("abcdef", &[(3, 5), (0, 1)]), "bcf");
    }
}
