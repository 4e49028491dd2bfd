//! Layers point one way, in couchsim (`couchsim/src`) and in the product (`src`), at two
//! scales:
//! - files: no file reaches itself through the modules it names — no two files that import
//!   each other, directly or round a loop;
//! - layers: no top-level module does either (a folder and everything in it is one layer, a
//!   top-level file is one too), so each layer uses only layers below it.
//!
//! A file is the module its path names (`replication/scheduler.rs` is `replication::scheduler`;
//! `x/mod.rs` and `x.rs` are `x`). It depends on what its non-test code names through
//! `crate::`, `super::` or `self::` — in a `use`, grouped or nested, or inline in code — each
//! path standing for the longest of its prefixes that is a module file
//! (`crate::node::docs::DocDb` is `node::docs`). Paths without those prefixes are not followed:
//! a module re-exporting its own files (`pub use ops::Move`) while they use its items is how a
//! folder's front door is written, not a loop between layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path: `["replication", "scheduler"]`.
type Module = Vec<String>;
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `src`, by the module it is.
fn files(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![(src.to_path_buf(), Module::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let mut module = prefix.clone();
            if path.is_dir() {
                module.push(name);
                dirs.push((path, module));
            } else if let Some(stem) = name.strip_suffix(".rs") {
                if stem != "mod" {
                    module.push(stem.to_string());
                }
                out.insert(module, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// The code before the first `#[cfg(test)]` (unit tests sit at the end of each file).
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or("")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident(s: &str) -> &str {
    &s[..s.find(|c| !is_ident(c)).unwrap_or(s.len())]
}

/// The comma-separated items of a `{…}` group (`text` starts right after its `{`), nested
/// groups kept whole.
fn top_level_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&text[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The paths spelt from `base` by `text` (what follows a `…::`): `a::b::C`, `{a, b::{c, self}}`;
/// `super` steps up, `self` stays.
fn expand(mut base: Module, text: &str, out: &mut Vec<Module>) {
    let mut rest = text.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                expand(base.clone(), item, out);
            }
            return;
        }
        match ident(rest) {
            "" => break,
            "super" => {
                base.pop();
            }
            "self" => {}
            name => base.push(name.to_string()),
        }
        rest = &rest[ident(rest).len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out.push(base);
}

/// The paths the code of module `me` names through `crate::`, `super::` and `self::`, from the
/// crate root.
fn paths(me: &[String], text: &str) -> Vec<Module> {
    let parent = me[..me.len().saturating_sub(1)].to_vec();
    let mut out = Vec::new();
    for (word, start) in [
        ("crate::", vec![]),
        ("self::", me.to_vec()),
        ("super::", parent),
    ] {
        for (i, _) in text.match_indices(word) {
            // `super::super::x` is read whole from its first `super`; `my_crate::` is no path.
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            expand(start.clone(), &text[i + word.len()..], &mut out);
        }
    }
    out
}

/// The longest prefix of `path` that is a module file.
fn resolve<'a>(path: &[String], modules: &'a BTreeSet<Module>) -> Option<&'a Module> {
    (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

/// File → the files it names.
fn graph(src: &Path) -> Graph {
    let files = files(src);
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(me, text)| {
            let deps = paths(me, non_test(text))
                .iter()
                .filter_map(|path| resolve(path, &modules))
                .filter(|dep| *dep != me)
                .map(|dep| dep.join("::"))
                .collect();
            (me.join("::"), deps)
        })
        .collect()
}

/// The top-level module a file belongs to: its layer.
fn layer(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// A file is its own group when a loop of files is explained.
fn file(module: &str) -> &str {
    module
}

/// Layer → the layers its files name.
fn layers(by_file: &Graph) -> Graph {
    let mut out = Graph::new();
    for (from, deps) in by_file {
        let uses = out.entry(layer(from).to_string()).or_default();
        let others = deps.iter().map(|d| layer(d)).filter(|l| *l != layer(from));
        uses.extend(others.map(str::to_string));
    }
    out
}

/// Strongly connected components with more than one module (Tarjan), each sorted.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

/// The file edges inside each cycle (of a cycle of layers, those between its layers), one per
/// line, for the failure message.
fn explain(by_file: &Graph, cycles: &[Vec<String>], group: fn(&str) -> &str) -> String {
    let mut out = String::new();
    for c in cycles {
        let inside = |m: &str| c.iter().any(|x| x == group(m));
        for (from, deps) in by_file {
            for to in deps {
                if group(from) != group(to) && inside(from) && inside(to) {
                    out.push_str(&format!("  {from} -> {to}\n"));
                }
            }
        }
        out.push('\n');
    }
    out
}

fn assert_one_way(src: &Path) {
    let by_file = graph(src);
    let by_layer = layers(&by_file);
    for (what, g, group) in [
        ("files", &by_file, file as fn(&str) -> &str),
        ("layers", &by_layer, layer),
    ] {
        let found = cycles(g);
        assert!(
            found.is_empty(),
            "import cycles among the {what} of {}:\n{}",
            src.display(),
            explain(&by_file, &found, group)
        );
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn couchsim_files_and_layers_import_one_way() {
    let src = root().join("src");
    assert!(graph(&src).len() > 10, "couchsim/src not found");
    assert_one_way(&src);
}

#[test]
fn product_files_and_layers_import_one_way() {
    let src = root().join("../src");
    assert!(
        layers(&graph(&src)).contains_key("client"),
        "the product's src/ not found"
    );
    assert_one_way(&src);
}

fn module(s: &str) -> Module {
    s.split("::").map(str::to_string).collect()
}

fn from_edges(edges: &[(&str, &str)]) -> Graph {
    edges.iter().fold(Graph::new(), |mut g, (x, y)| {
        g.entry(x.to_string()).or_default().insert(y.to_string());
        g.entry(y.to_string()).or_default();
        g
    })
}

#[test]
fn the_check_reads_every_form_of_path() {
    let me = module("cluster::fabric");
    let found: BTreeSet<Module> = paths(
        &me,
        "use crate::a::X;\nuse crate::{b, c::Y, self};\nfn f() { crate::d::g(); }\n\
         use crate::{\n    e::{F, G},\n    h::{self, I},\n};\nuse super::copies::{self, Edit};\n\
         use super::super::util;\nuse self::inner::Z;\nlet t = my_crate::q::R;",
    )
    .into_iter()
    .collect();
    let want: BTreeSet<Module> = [
        "a::X",
        "b",
        "c::Y",
        "cluster::copies",
        "cluster::copies::Edit",
        "cluster::fabric::inner::Z",
        "d::g",
        "e::F",
        "e::G",
        "h",
        "h::I",
        "util",
    ]
    .iter()
    .map(|s| module(s))
    .chain([Module::new()]) // `crate::{self}`: the root
    .collect();
    assert_eq!(found, want);
    let modules: BTreeSet<Module> = ["node", "node::docs", "cluster::fabric"]
        .iter()
        .map(|s| module(s))
        .collect();
    assert_eq!(
        resolve(&module("node::docs::DocDb"), &modules),
        Some(&module("node::docs"))
    );
    assert_eq!(
        resolve(&module("node::lock"), &modules),
        Some(&module("node"))
    );
    assert_eq!(resolve(&module("cluster::seq"), &modules), None);
    assert_eq!(
        non_test("use crate::a;\n#[cfg(test)]\nmod tests { use crate::b; }"),
        "use crate::a;\n"
    );
}

#[test]
fn the_check_finds_cycles_of_files_and_of_layers() {
    let loop_of_files = from_edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a"), ("e", "e")]);
    assert_eq!(
        cycles(&loop_of_files),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );

    // Two files of `node` and two of `http`, each file pointing one way: no loop among files,
    // but `node` and `http` use each other.
    let dir = std::env::temp_dir().join(format!("layers-check-{}", std::process::id()));
    let write = |path: &str, text: &str| {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("has a folder")).expect("temp dir");
        std::fs::write(p, text).expect("temp file");
    };
    write("lib.rs", "mod http;\nmod node;\n");
    write(
        "node/mod.rs",
        "pub mod store;\nuse crate::http::answers::ok;\n",
    );
    write("node/store.rs", "pub struct Store;\n");
    write("http/mod.rs", "pub mod answers;\npub mod routes;\n");
    write("http/answers.rs", "pub fn ok() {}\n");
    write("http/routes.rs", "use crate::node::store::Store;\n");
    let by_file = graph(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(cycles(&by_file), Vec::<Vec<String>>::new());
    let by_layer = layers(&by_file);
    assert_eq!(
        cycles(&by_layer),
        vec![vec!["http".to_string(), "node".into()]]
    );
    assert_eq!(
        explain(&by_file, &cycles(&by_layer), layer),
        "  http::routes -> node::store\n  node -> http::answers\n\n"
    );
}
