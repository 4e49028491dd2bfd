//! Layers point one way: no module of couchsim (`couchsim/src`) or of the product (`src`)
//! reaches itself through `crate::` paths — no two files that import each other, directly or
//! round a loop. A module depends on another when its non-test code names `crate::<other>`
//! (in a `use`, grouped `use crate::{a, b}` included, or inline in code).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module name → the source of that module (top-level files; `dir/mod.rs` and the other
/// files of `dir/` count as module `dir`).
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let entries = std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_dir(&p)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|f| f.path().extension().is_some_and(|x| x == "rs"))
                        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            out.insert(name, text);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.insert(name, std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

/// The code before the first `#[cfg(test)]` (unit tests sit at the end of each file).
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or("")
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
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

/// The modules `text` names through `crate::`.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for part in top_level_items(group) {
                let first = ident(part.trim());
                if !first.is_empty() && first != "self" {
                    out.insert(first);
                }
            }
        } else {
            let first = ident(rest);
            if !first.is_empty() {
                out.insert(first);
            }
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let mods = modules(src);
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, text)| {
            let deps = references(non_test(text))
                .into_iter()
                .filter(|d| d != m && names.contains(d))
                .collect();
            (m.clone(), deps)
        })
        .collect()
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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn couchsim_modules_import_one_way() {
    let g = graph(&root().join("src"));
    assert!(g.len() > 10, "couchsim/src not found: {g:?}");
    assert_eq!(
        cycles(&g),
        Vec::<Vec<String>>::new(),
        "import cycles in couchsim/src"
    );
}

#[test]
fn product_modules_import_one_way() {
    let g = graph(&root().join("../src"));
    assert!(g.contains_key("client"), "the product's src/ not found");
    assert_eq!(
        cycles(&g),
        Vec::<Vec<String>>::new(),
        "import cycles in src/"
    );
}

#[test]
fn the_check_finds_cycles_and_reads_every_form_of_crate_path() {
    let refs = references(
        "use crate::a::X;\nuse crate::{b, c::Y, self};\nfn f() { crate::d::g(); }\n\
         use crate::{\n    e::{F, G},\n    h,\n};",
    );
    let want: BTreeSet<String> = ["a", "b", "c", "d", "e", "h"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refs, want);
    assert_eq!(
        non_test("use crate::a;\n#[cfg(test)]\nmod tests { use crate::b; }"),
        "use crate::a;\n"
    );
    let g: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a"), ("e", "e")]
        .iter()
        .fold(Graph::new(), |mut g, (x, y)| {
            g.entry(x.to_string()).or_default().insert(y.to_string());
            g.entry(y.to_string()).or_default();
            g
        });
    assert_eq!(
        cycles(&g),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}
