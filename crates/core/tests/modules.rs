//! The module graph of the crate has no cycle: every `crate::x` a module
//! names must not lead back to it. (ARCHITECTURE.md draws the graph.)

use std::collections::{BTreeMap, BTreeSet};

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut g = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Code before the unit tests, doc links included (a link up the
        // graph is a dependency a reader has to follow too); plain comments
        // may name any module.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut deps = BTreeSet::new();
        let is_plain_comment = |l: &str| {
            let l = l.trim_start();
            l.starts_with("//") && !l.starts_with("///") && !l.starts_with("//!")
        };
        for line in code.lines().filter(|l| !is_plain_comment(l)) {
            for part in line.split("crate::").skip(1) {
                let dep: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !dep.is_empty() && dep != name {
                    deps.insert(dep);
                }
            }
        }
        g.insert(name, deps);
    }
    g
}

#[test]
fn no_import_cycles() {
    let g = graph();
    assert!(g.len() > 10, "read the modules: {:?}", g.keys());
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("import cycle: {} -> {n}", path[i..].join(" -> "));
        }
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            visit(d, g, path, done);
        }
        path.pop();
        done.insert(n.to_string());
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        visit(n, &g, &mut Vec::new(), &mut done);
    }
}
