//! `cargo xtask tidy`: structural rules that rustc and clippy cannot see. astra-user's
//! top-level modules form layers and may only import downwards, never in a cycle; clap stays in
//! the command line; errors are typed rather than `String`; commits have a short subject and a
//! body. Sources are parsed with syn, so a path in a function body, a type or a macro's
//! arguments counts as an import just like a `use` item does.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail};
use proc_macro2::{Ident, Spacing, TokenStream, TokenTree};
use syn::{
    Attribute, GenericArgument, ItemMacro, ItemMod, ItemUse, Macro, Meta, PathArguments,
    PathSegment, Token, Type, TypePath, UseTree,
    punctuated::Punctuated,
    visit::{self, Visit},
};

use crate::cmd;

/// astra-user's top-level modules by layer, bottom first. A module may use modules of lower
/// layers, and of its own layer as long as that makes no cycle; anything else is an upward
/// import. A module missing here is a violation, so each new one gets a deliberate place.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &["text", "clock", "files", "addr", "store", "error", "limits"],
    ),
    ("dataplane", &["dataplane"]),
    ("flow", &["flow"]),
    ("features", &["features"]),
    ("detect", &["detect"]),
    ("verdict", &["verdict"]),
    ("lists+sink", &["lists", "sink"]),
    ("engine", &["engine"]),
    ("replay", &["replay"]),
    ("agent", &["agent"]),
    ("lab", &["lab"]),
    ("bench", &["bench"]),
    ("cli", &["cli"]),
];

/// Commits after this one must have a short subject and a body; older history predates the rule.
pub const TIDY_BASE: &str = "b0d1bdd";
const MAX_SUBJECT: usize = 72;

const USER_SRC: &str = "astra-user/src";
const XTASK_SRC: &str = "xtask/src";
/// The crate root and the binary: the binary may import anything, and neither is a layer.
const EXEMPT: &[&str] = &["lib.rs", "main.rs"];
/// The one module allowed to use clap (besides main.rs).
const CLI: &str = "cli";
const CLAP_DERIVES: &[&str] = &["Parser", "Subcommand", "Args", "ValueEnum"];
const CLAP_ATTRIBUTES: &[&str] = &["arg", "command", "clap"];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// A path relative to the checked root, and a 1-based line.
    File {
        path: String,
        line: usize,
    },
    Commit(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::File { path, line } => write!(f, "{path}:{line}: {}", self.message),
            Location::Commit(hash) => write!(f, "commit {hash}: {}", self.message),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    /// Source files parsed.
    pub files: usize,
    /// References from one top-level module of astra-user to another.
    pub imports: usize,
    pub violations: Vec<Violation>,
}

/// Checks the tree and the commits since [`TIDY_BASE`]; prints one line per violation.
pub fn run() -> Result<()> {
    let root = cmd::workspace_root();
    let mut report = check(&root)?;
    match commit_log(&root) {
        Ok(log) => report.violations.extend(check_commits(&log)),
        Err(why) => eprintln!("note: tidy: commit messages not checked: {why:#}"),
    }
    for violation in &report.violations {
        eprintln!("{violation}");
    }
    match report.violations.len() {
        0 => {
            eprintln!(
                "tidy: {} files, {} imports, layers ok",
                report.files, report.imports
            );
            Ok(())
        }
        1 => bail!("tidy found 1 violation"),
        n => bail!("tidy found {n} violations"),
    }
}

/// The source rules (layers, cycles, clap, typed errors) over `root`, which holds
/// `astra-user/src` and possibly `xtask/src`. Violations come sorted, paths relative to `root`.
pub fn check(root: &Path) -> Result<Report> {
    let mut report = Report::default();
    let mut user = Vec::new();
    for path in rust_files(&root.join(USER_SRC))? {
        if let Some(source) = parse(root, &path, &mut report)? {
            user.push(source);
        }
    }
    let xtask_dir = root.join(XTASK_SRC);
    if xtask_dir.is_dir() {
        for path in rust_files(&xtask_dir)? {
            if let Some(source) = parse(root, &path, &mut report)? {
                let scan = Scan::of(&source.file, Vec::new());
                report.violations.extend(string_errors(&source.rel, &scan));
            }
        }
    }
    check_user(&user, &mut report);
    report.violations.sort();
    report.violations.dedup();
    Ok(report)
}

struct Source {
    /// Relative to the checked root, e.g. `astra-user/src/flow/table.rs`.
    rel: String,
    /// Components under `src`, e.g. `["flow", "table.rs"]`.
    components: Vec<String>,
    file: syn::File,
}

impl Source {
    fn exempt(&self) -> bool {
        matches!(self.components.as_slice(), [only] if EXEMPT.contains(&only.as_str()))
    }

    /// The module path inside the crate: `flow/table.rs` is `flow::table`, `flow/mod.rs` is
    /// `flow`. Its first element is the top-level module the layer rules are about.
    fn scope(&self) -> Vec<String> {
        let mut scope = self.components.clone();
        if let Some(last) = scope.pop() {
            let stem = last.strip_suffix(".rs").unwrap_or(&last);
            if stem != "mod" {
                scope.push(stem.to_owned());
            }
        }
        scope
    }
}

/// Parses one file; a file syn cannot parse is a violation rather than an error, so the rest
/// of the tree is still checked.
fn parse(root: &Path, path: &Path, report: &mut Report) -> Result<Option<Source>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let rel_path = path.strip_prefix(root).unwrap_or(path);
    let rel = rel_path.display().to_string();
    report.files += 1;
    let file = match syn::parse_file(&text) {
        Ok(file) => file,
        Err(err) => {
            report.violations.push(Violation {
                location: Location::File {
                    path: rel,
                    line: err.span().start().line,
                },
                message: format!("does not parse: {err}"),
            });
            return Ok(None);
        }
    };
    let components = rel_path
        .strip_prefix(USER_SRC)
        .unwrap_or(rel_path)
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    Ok(Some(Source {
        rel,
        components,
        file,
    }))
}

/// All `.rs` files below `dir`, in a stable order.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(index, (name, _))| (index, *name))
}

fn at(path: &str, line: usize, message: String) -> Violation {
    Violation {
        location: Location::File {
            path: path.to_owned(),
            line,
        },
        message,
    }
}

fn string_errors(rel: &str, scan: &Scan) -> impl Iterator<Item = Violation> {
    scan.string_results.iter().map(move |&line| {
        at(
            rel,
            line,
            "`Result<_, String>`: return a typed error instead".to_owned(),
        )
    })
}

/// Where each first import from one module of another was seen, for the cycle report.
type Edges = BTreeMap<(String, String), (String, usize)>;

fn check_user(sources: &[Source], report: &mut Report) {
    let modules: BTreeSet<String> = sources
        .iter()
        .filter(|s| !s.exempt())
        .filter_map(|s| s.scope().into_iter().next())
        .collect();
    let scans: Vec<Scan> = sources
        .iter()
        .map(|s| Scan::of(&s.file, if s.exempt() { Vec::new() } else { s.scope() }))
        .collect();

    // `crate::X` may name an item the crate root re-exports, or a `#[macro_export]` macro;
    // either belongs to the module that defines it.
    let mut aliases = BTreeMap::new();
    for (source, scan) in sources.iter().zip(&scans) {
        if let Some(module) = source.scope().first() {
            for name in &scan.exported_macros {
                aliases.insert(name.clone(), module.clone());
            }
        }
    }
    if let Some(lib) = sources.iter().find(|s| s.components == ["lib.rs"]) {
        aliases.extend(reexports(&lib.file, &modules));
    }
    let module_of = |name: &str| {
        if modules.contains(name) {
            Some(name.to_owned())
        } else {
            aliases.get(name).cloned()
        }
    };

    let mut edges = Edges::new();
    for (source, scan) in sources.iter().zip(&scans) {
        let rel = &source.rel;
        report.violations.extend(string_errors(rel, scan));
        let module = source.scope().into_iter().next();
        let in_cli = module.as_deref() == Some(CLI) || source.components == ["main.rs"];
        if !in_cli {
            report.violations.extend(scan.clap.iter().map(|&line| {
                at(
                    rel,
                    line,
                    "clap outside the command line (only cli/ and main.rs may use it)".to_owned(),
                )
            }));
        }
        let Some(module) = module.filter(|_| !source.exempt()) else {
            continue;
        };
        let Some((layer, layer_name)) = layer_of(&module) else {
            report.violations.push(at(
                rel,
                1,
                format!("module {module} is not in tidy's layer table"),
            ));
            continue;
        };
        let mut seen = BTreeSet::new();
        for (name, line) in &scan.refs {
            let Some(target) = module_of(name).filter(|t| *t != module) else {
                continue;
            };
            if !seen.insert((*line, target.clone())) {
                continue;
            }
            report.imports += 1;
            edges
                .entry((module.clone(), target.clone()))
                .or_insert_with(|| (rel.clone(), *line));
            // A target outside the table is reported at its own files.
            if layer_of(&target).is_some_and(|(target_layer, _)| target_layer > layer) {
                report.violations.push(at(
                    rel,
                    *line,
                    format!("{module} (layer {layer_name}) imports {target}, a layer above it"),
                ));
            }
        }
    }
    report.violations.extend(cycles(&edges));
}

/// Names the crate root brings in with `use` (`pub use error::{Error, Result}` makes
/// `crate::Result` a path into `error`), mapped to the module they come from.
fn reexports(lib: &syn::File, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for item in &lib.items {
        let syn::Item::Use(item) = item else { continue };
        for (path, name) in use_leaves(&item.tree) {
            let mut path = path.iter().skip_while(|s| *s == "crate" || *s == "self");
            let (Some(module), Some(name)) = (path.next(), name) else {
                continue;
            };
            let module = module.to_string();
            if modules.contains(&module) && !modules.contains(&name.to_string()) {
                aliases.insert(name.to_string(), module);
            }
        }
    }
    aliases
}

/// One cycle per group of modules that import each other, starting at the group's
/// alphabetically first module so the report is stable.
fn cycles(edges: &Edges) -> Vec<Violation> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().insert(to);
    }
    let mut reported = BTreeSet::new();
    let mut violations = Vec::new();
    for &start in graph.keys() {
        if reported.contains(start) {
            continue;
        }
        let Some(cycle) = shortest_cycle(&graph, start) else {
            continue;
        };
        // Everything that reaches back to `start` is in the same tangle: one report for all.
        let group = reachable(&graph, start)
            .into_iter()
            .filter(|m| reachable(&graph, m).contains(start));
        reported.extend(group);
        let (path, line) = &edges[&(cycle[0].to_owned(), cycle[1].to_owned())];
        violations.push(at(
            path,
            *line,
            format!("import cycle: {}", cycle.join(" -> ")),
        ));
    }
    violations
}

fn reachable<'g>(graph: &BTreeMap<&'g str, BTreeSet<&'g str>>, from: &str) -> BTreeSet<&'g str> {
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<&str> = graph.get(from).into_iter().flatten().copied().collect();
    while let Some(node) = queue.pop_front() {
        if seen.insert(node) {
            queue.extend(graph.get(node).into_iter().flatten());
        }
    }
    seen
}

/// The shortest `start -> ... -> start`, by breadth-first search.
fn shortest_cycle<'g>(
    graph: &BTreeMap<&'g str, BTreeSet<&'g str>>,
    start: &'g str,
) -> Option<Vec<&'g str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in graph.get(node).into_iter().flatten() {
            if next == start {
                let mut cycle = vec![start];
                let mut at = node;
                while at != start {
                    cycle.push(at);
                    at = parent[at];
                }
                cycle.push(start);
                cycle.reverse();
                return Some(cycle);
            }
            if !parent.contains_key(next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// What one file refers to, gathered by walking its whole syntax tree (function bodies,
/// types, impls and test modules included).
#[derive(Default)]
struct Scan {
    /// The module path of the item being visited: the file's own, plus inline `mod`s.
    scope: Vec<String>,
    /// Names at the crate root that paths lead to (`x` in `crate::x::Y`), with their lines.
    refs: Vec<(String, usize)>,
    clap: Vec<usize>,
    string_results: Vec<usize>,
    exported_macros: Vec<String>,
}

impl Scan {
    fn of(file: &syn::File, scope: Vec<String>) -> Self {
        let mut scan = Scan {
            scope,
            ..Scan::default()
        };
        scan.visit_file(file);
        scan
    }

    fn path(&mut self, segments: &[Ident]) {
        if let [first, _, ..] = segments
            && first == "clap"
        {
            self.clap.push(line(first));
        }
        self.reference(segments);
    }

    fn reference(&mut self, segments: &[Ident]) {
        if let Some(name) = self.crate_root_name(segments) {
            self.refs.push((name.to_string(), line(name)));
        }
    }

    /// The crate-root name a path goes through: `x` in `crate::x::Y`, or in `super::super::x`
    /// from two modules down. `None` for paths that stay in the current top-level module
    /// (`self::`, a shorter `super::`) or never enter the crate root.
    fn crate_root_name<'p>(&self, segments: &'p [Ident]) -> Option<&'p Ident> {
        let first = segments.first()?;
        if first == "crate" {
            return segments.get(1);
        }
        let supers = segments.iter().take_while(|s| *s == "super").count();
        if supers > 0 && supers == self.scope.len() {
            return segments.get(supers);
        }
        None
    }

    /// Macro arguments are bare tokens to syn: find path-shaped runs (`ident :: ident ...`)
    /// in them, so `format!("{}", crate::x::y())` counts like any other path.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => self.tokens(group.stream()),
                // An ident right after `::` continues a path that did not start at an ident
                // (`Vec::<u8>::new`); only path starts are interesting.
                TokenTree::Ident(first) if !(i >= 2 && is_path_sep(&tokens[i - 2..])) => {
                    let mut segments = vec![first.clone()];
                    let mut end = i + 1;
                    while is_path_sep(&tokens[end..]) {
                        let Some(TokenTree::Ident(next)) = tokens.get(end + 2) else {
                            break;
                        };
                        segments.push(next.clone());
                        end += 3;
                    }
                    if segments.len() > 1 {
                        self.path(&segments);
                    }
                    i = end;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn is_path_sep(tokens: &[TokenTree]) -> bool {
    matches!(tokens, [TokenTree::Punct(a), TokenTree::Punct(b), ..]
        if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
}

fn line(ident: &Ident) -> usize {
    ident.span().start().line
}

/// Each path a `use` tree imports, with the name it binds (`None` for a glob):
/// `use crate::{a::B, b::{c as d, *}}` gives `crate::a::B` (B), `crate::b::c` (d), `crate::b`.
fn use_leaves(tree: &UseTree) -> Vec<(Vec<Ident>, Option<Ident>)> {
    fn walk(tree: &UseTree, prefix: &mut Vec<Ident>, out: &mut Vec<(Vec<Ident>, Option<Ident>)>) {
        let with = |prefix: &[Ident], last: &Ident| {
            let mut path = prefix.to_vec();
            path.push(last.clone());
            path
        };
        match tree {
            UseTree::Path(p) => {
                prefix.push(p.ident.clone());
                walk(&p.tree, prefix, out);
                prefix.pop();
            }
            UseTree::Name(n) => {
                // `a::{self}` binds `a`.
                let name = if n.ident == "self" {
                    prefix.last().cloned()
                } else {
                    Some(n.ident.clone())
                };
                out.push((with(prefix, &n.ident), name));
            }
            UseTree::Rename(r) => out.push((with(prefix, &r.ident), Some(r.rename.clone()))),
            UseTree::Glob(_) => out.push((prefix.clone(), None)),
            UseTree::Group(g) => {
                for tree in &g.items {
                    walk(tree, prefix, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// `#[derive(...)]` naming one of clap's derives.
fn derives_clap(attr: &Attribute) -> bool {
    attr.path().is_ident("derive")
        && attr
            .parse_args_with(Punctuated::<syn::Path, Token![,]>::parse_terminated)
            .is_ok_and(|paths| {
                paths.iter().any(|p| {
                    p.segments
                        .last()
                        .is_some_and(|s| CLAP_DERIVES.iter().any(|d| s.ident == d))
                })
            })
}

/// `String`, `std::string::String` or `alloc::string::String`.
fn is_string(arg: &GenericArgument) -> bool {
    let GenericArgument::Type(Type::Path(TypePath {
        qself: None, path, ..
    })) = arg
    else {
        return false;
    };
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    path.segments.iter().all(|s| s.arguments.is_none())
        && matches!(names.as_slice(), ["String"] | [.., "string", "String"])
}

impl<'ast> Visit<'ast> for Scan {
    fn visit_item_mod(&mut self, item: &'ast ItemMod) {
        if item.content.is_some() {
            self.scope.push(item.ident.to_string());
            visit::visit_item_mod(self, item);
            self.scope.pop();
        } else {
            visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast ItemUse) {
        for (path, _) in use_leaves(&item.tree) {
            if let Some(first) = path.first().filter(|f| *f == "clap") {
                self.clap.push(line(first));
            }
            self.reference(&path);
        }
        visit::visit_item_use(self, item);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<Ident> = path.segments.iter().map(|s| s.ident.clone()).collect();
        self.path(&segments);
        visit::visit_path(self, path);
    }

    fn visit_path_segment(&mut self, segment: &'ast PathSegment) {
        if segment.ident == "Result"
            && let PathArguments::AngleBracketed(args) = &segment.arguments
            && args.args.iter().nth(1).is_some_and(is_string)
        {
            self.string_results.push(line(&segment.ident));
        }
        visit::visit_path_segment(self, segment);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }

    fn visit_item_macro(&mut self, item: &'ast ItemMacro) {
        if let Some(name) = &item.ident
            && item.attrs.iter().any(|a| a.path().is_ident("macro_export"))
        {
            self.exported_macros.push(name.to_string());
        }
        visit::visit_item_macro(self, item);
    }

    fn visit_attribute(&mut self, attr: &'ast Attribute) {
        let path = attr.path();
        if (CLAP_ATTRIBUTES.iter().any(|a| path.is_ident(a)) || derives_clap(attr))
            && let Some(first) = path.segments.first()
        {
            self.clap.push(line(&first.ident));
        }
        // A list attribute's arguments are bare tokens, like a macro's.
        if let Meta::List(list) = &attr.meta {
            self.tokens(list.tokens.clone());
        }
        visit::visit_attribute(self, attr);
    }
}

/// `git log` since [`TIDY_BASE`]: one record per commit, `hash US subject US body RS`.
/// An error means the rule cannot be checked here (no git, not a checkout, shallow clone).
fn commit_log(root: &Path) -> Result<String> {
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(root).args(args);
        cmd::output(&mut cmd)
    };
    which::which("git").map_err(|_| anyhow!("git is not installed"))?;
    git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{TIDY_BASE}^{{commit}}"),
    ])
    .map_err(|_| anyhow!("base commit {TIDY_BASE} is not in this history"))?;
    git(&["merge-base", "--is-ancestor", TIDY_BASE, "HEAD"])
        .map_err(|_| anyhow!("HEAD does not descend from base commit {TIDY_BASE}"))?;
    git(&[
        "log",
        "--format=%h%x1f%s%x1f%b%x1e",
        &format!("{TIDY_BASE}..HEAD"),
    ])
}

/// Subjects of at most [`MAX_SUBJECT`] characters and a body, for a log from [`commit_log`].
fn check_commits(log: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    for record in log.split('\x1e').map(str::trim).filter(|r| !r.is_empty()) {
        let mut fields = record.splitn(3, '\x1f');
        let (hash, subject, body) = (
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
            fields.next().unwrap_or_default(),
        );
        let commit = |message| Violation {
            location: Location::Commit(hash.to_owned()),
            message,
        };
        let length = subject.chars().count();
        if length > MAX_SUBJECT {
            violations.push(commit(format!(
                "subject has {length} characters, more than {MAX_SUBJECT}"
            )));
        }
        if body.trim().is_empty() {
            violations.push(commit(format!("no body below the subject {subject:?}")));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::{
        process,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// A tree of files in a fresh temporary directory, removed on drop.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(files: &[(&str, &str)]) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let root = std::env::temp_dir().join(format!("xtask-tidy-{}-{n}", process::id()));
            let _ = fs::remove_dir_all(&root);
            for (path, text) in files {
                let path = root.join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
            // A tree always has a crate root.
            let lib = root.join(USER_SRC).join("lib.rs");
            if !lib.exists() {
                fs::create_dir_all(lib.parent().unwrap()).unwrap();
                fs::write(lib, "").unwrap();
            }
            Fixture(root)
        }

        fn violations(&self) -> Vec<String> {
            check(&self.0)
                .unwrap()
                .violations
                .iter()
                .map(ToString::to_string)
                .collect()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn user(path: &str) -> String {
        format!("{USER_SRC}/{path}")
    }

    fn violations(files: &[(&str, &str)]) -> Vec<String> {
        let files: Vec<(String, &str)> = files.iter().map(|(p, t)| (user(p), *t)).collect();
        let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        Fixture::new(&files).violations()
    }

    #[test]
    fn upward_use_is_caught_downward_use_is_not() {
        let found = violations(&[
            ("agent/mod.rs", "mod x;\n\nuse crate::cli::Args;\n"),
            ("cli.rs", "use crate::agent::Agent;\n"),
        ]);
        assert_eq!(
            found,
            [
                "astra-user/src/agent/mod.rs:3: agent (layer agent) imports cli, a layer above it",
                "astra-user/src/agent/mod.rs:3: import cycle: agent -> cli -> agent",
            ]
        );
        assert!(
            violations(&[("cli.rs", "use crate::agent::Agent;\n"), ("agent.rs", "")]).is_empty()
        );
    }

    #[test]
    fn upward_path_in_a_fn_body_is_caught() {
        let found = violations(&[
            (
                "text.rs",
                "fn f() {\n    let _ = crate::engine::run();\n}\n",
            ),
            ("engine.rs", "pub fn run() {}\n"),
        ]);
        assert_eq!(
            found,
            ["astra-user/src/text.rs:2: text (layer foundation) imports engine, a layer above it"]
        );
    }

    #[test]
    fn paths_in_macros_and_test_modules_are_caught() {
        let found = violations(&[
            (
                "flow.rs",
                "fn f() -> String {\n    format!(\"{}\", crate::verdict::NAME)\n}\n\
                 #[cfg(test)]\nmod tests {\n    use super::*;\n    use crate::detect::Rule;\n}\n",
            ),
            ("verdict.rs", ""),
            ("detect.rs", ""),
        ]);
        assert_eq!(
            found,
            [
                "astra-user/src/flow.rs:2: flow (layer flow) imports verdict, a layer above it",
                "astra-user/src/flow.rs:7: flow (layer flow) imports detect, a layer above it",
            ]
        );
    }

    #[test]
    fn nested_use_trees_name_each_module() {
        let found = violations(&[
            (
                "dataplane.rs",
                "use crate::{\n    text::A,\n    flow::{B, c as d},\n    lists::*,\n};\n",
            ),
            ("text.rs", ""),
            ("flow.rs", ""),
            ("lists.rs", ""),
        ]);
        assert_eq!(
            found,
            [
                "astra-user/src/dataplane.rs:3: dataplane (layer dataplane) imports flow, a layer above it",
                "astra-user/src/dataplane.rs:4: dataplane (layer dataplane) imports lists, a layer above it",
            ]
        );
    }

    #[test]
    fn super_paths_out_of_the_module_are_imports() {
        let found = violations(&[
            (
                "flow/table.rs",
                "use super::super::detect::Rule;\nuse super::Flow;\n",
            ),
            (
                "flow/mod.rs",
                "mod table;\nmod tests {\n    use super::super::text::X;\n}\n",
            ),
            ("detect.rs", ""),
            ("text.rs", ""),
        ]);
        assert_eq!(
            found,
            ["astra-user/src/flow/table.rs:1: flow (layer flow) imports detect, a layer above it"]
        );
    }

    #[test]
    fn same_layer_imports_are_fine_until_they_cycle() {
        let one_way = [
            ("text.rs", "use crate::clock::Now;\n"),
            ("clock.rs", "pub struct Now;\n"),
        ];
        assert!(violations(&one_way).is_empty());
        let found = violations(&[
            ("text.rs", "use crate::clock::Now;\n"),
            (
                "clock.rs",
                "pub struct Now;\n\nfn f() -> crate::text::Text {\n    todo!()\n}\n",
            ),
        ]);
        assert_eq!(
            found,
            ["astra-user/src/clock.rs:3: import cycle: clock -> text -> clock"]
        );
    }

    #[test]
    fn reexports_from_the_crate_root_count_as_their_module() {
        let found = violations(&[
            (
                "lib.rs",
                "pub mod cli;\npub mod text;\npub use cli::Args;\n",
            ),
            ("cli.rs", ""),
            ("text.rs", "fn f(_: crate::Args) {}\n"),
        ]);
        assert_eq!(
            found,
            ["astra-user/src/text.rs:1: text (layer foundation) imports cli, a layer above it"]
        );
    }

    #[test]
    fn unknown_modules_are_caught() {
        let found = violations(&[("widgets/mod.rs", "use crate::text::T;\n"), ("text.rs", "")]);
        assert_eq!(
            found,
            ["astra-user/src/widgets/mod.rs:1: module widgets is not in tidy's layer table"]
        );
    }

    #[test]
    fn clap_only_in_the_cli() {
        let clap = "use clap::ValueEnum;\n\n#[derive(Debug, Parser)]\nstruct A {\n    #[arg(long)]\n    \
                    x: u8,\n    y: clap::ArgAction,\n}\n";
        let found = violations(&[("engine.rs", clap), ("cli/mod.rs", clap), ("main.rs", clap)]);
        let message = "clap outside the command line (only cli/ and main.rs may use it)";
        assert_eq!(
            found,
            [1, 3, 5, 7].map(|line| format!("astra-user/src/engine.rs:{line}: {message}"))
        );
        assert!(violations(&[("engine.rs", "#[derive(Debug, Clone)]\nstruct A;\n")]).is_empty());
    }

    #[test]
    fn string_errors_are_caught_in_both_crates() {
        let fixture = Fixture::new(&[
            (
                &user("store.rs"),
                "fn a() -> Result<(), String> { Ok(()) }\n\
                 fn b() -> std::result::Result<u8, std::string::String> { Ok(1) }\n\
                 fn c() -> Result<(), crate::error::Error> { Ok(()) }\n\
                 fn d() -> rusqlite::Result<String> { todo!() }\n\
                 fn e() -> Result<Vec<String>, Box<str>> { todo!() }\n",
            ),
            (&user("error.rs"), ""),
            (
                "xtask/src/main.rs",
                "fn main() {\n    let _: Result<(), String> = Ok(());\n}\n",
            ),
        ]);
        let message = "`Result<_, String>`: return a typed error instead";
        assert_eq!(
            fixture.violations(),
            [
                format!("astra-user/src/store.rs:1: {message}"),
                format!("astra-user/src/store.rs:2: {message}"),
                format!("xtask/src/main.rs:2: {message}"),
            ]
        );
    }

    #[test]
    fn clean_tree_counts_files_and_imports() {
        let fixture = Fixture::new(&[
            (
                &user("lib.rs"),
                "pub mod agent;\npub mod text;\npub use text::Text;\n",
            ),
            (&user("main.rs"), "use clap::Parser;\nfn main() {}\n"),
            (&user("text.rs"), "pub struct Text;\n"),
            (
                &user("agent/mod.rs"),
                "use crate::{Text, text};\nfn f() { let _ = format!(\"{:?}\", crate::text::Text); }\n",
            ),
            ("xtask/src/main.rs", "fn main() {}\n"),
        ]);
        let report = check(&fixture.0).unwrap();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!((report.files, report.imports), (5, 2));
    }

    #[test]
    fn unparsable_files_are_violations() {
        let found = violations(&[("text.rs", "fn f() {\n    let = ;\n}\n")]);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("astra-user/src/text.rs:2: does not parse: "),
            "{found:?}"
        );
    }

    #[test]
    fn commit_subjects_and_bodies() {
        let long = "x".repeat(73);
        let log = format!(
            "aaaaaaa\x1fShort subject\x1fA body.\n\x1e\n\
             bbbbbbb\x1f{long}\x1fBody.\x1e\n\
             ccccccc\x1fNo body\x1f\n\x1e\n"
        );
        let found: Vec<String> = check_commits(&log)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "commit bbbbbbb: subject has 73 characters, more than 72",
                "commit ccccccc: no body below the subject \"No body\"",
            ]
        );
        assert!(check_commits("").is_empty());
    }
}
