//! `docs/openapi.json` (served at `/api/v1/openapi.json`) describes exactly the routes the server
//! registers: the (method, path) pairs in the document must equal those read from the router's
//! source (`src/http/mod.rs` and the files it nests), so a route added without documentation, or
//! documented but gone, fails here. No server process is needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// HTTP methods as axum's `routing` functions and OpenAPI's path-item keys name them.
const METHODS: [&str; 8] = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What the router source is made of, as far as route registration needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
}

/// Splits Rust source into identifiers, string literals and punctuation, dropping whitespace,
/// comments, numbers and char literals, so that line breaks (rustfmt) and comments do not matter.
fn tokenize(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                tokens.push(Token::Ident("r".into()));
                i += 1;
                continue;
            }
            let start = j + 1;
            let mut k = start;
            loop {
                assert!(k < chars.len(), "unterminated raw string");
                if chars[k] == '"' && (0..hashes).all(|h| chars.get(k + 1 + h) == Some(&'#')) {
                    break;
                }
                k += 1;
            }
            tokens.push(Token::Str(chars[start..k].iter().collect()));
            i = k + 1 + hashes;
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    text.push(ch);
                }
                i += 1;
            }
            tokens.push(Token::Str(text));
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') is skipped; a lifetime ('a) is just a quote.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if !c.is_ascii_digit() {
                tokens.push(Token::Ident(word));
            }
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

fn is_ident(t: Option<&Token>, name: &str) -> bool {
    matches!(t, Some(Token::Ident(n)) if n == name)
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    t == Some(&Token::Punct(p))
}

/// The calls `.NAME("literal", ...)` in `tokens`: for each, the literal and the tokens of the
/// rest of the argument list (up to the matching close parenthesis).
fn calls<'a>(tokens: &'a [Token], name: &str) -> Vec<(String, &'a [Token])> {
    let mut found = Vec::new();
    for i in 0..tokens.len() {
        if !(is_punct(tokens.get(i), '.')
            && is_ident(tokens.get(i + 1), name)
            && is_punct(tokens.get(i + 2), '('))
        {
            continue;
        }
        let Some(Token::Str(literal)) = tokens.get(i + 3) else {
            panic!(".{name}( without a string literal path: the route parser needs extending");
        };
        let start = i + 4;
        let mut depth = 1;
        let mut end = start;
        while depth > 0 {
            match tokens.get(end) {
                Some(Token::Punct('(')) => depth += 1,
                Some(Token::Punct(')')) => depth -= 1,
                Some(_) => {}
                None => panic!("unbalanced parentheses after .{name}(\"{literal}\""),
            }
            end += 1;
        }
        found.push((literal.clone(), &tokens[start..end - 1]));
    }
    found
}

/// The methods of a method router such as `get(a::<S>).post(b::<S>)`.
fn methods(router: &[Token]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, t) in router.iter().enumerate() {
        let Token::Ident(name) = t else { continue };
        if !is_punct(router.get(i + 1), '(') {
            continue;
        }
        assert!(
            !matches!(name.as_str(), "any" | "on" | "any_service" | "on_service" | "get_service"),
            "a route uses `{name}(...)`: the route parser needs extending"
        );
        if METHODS.contains(&name.as_str()) {
            found.push(name.to_ascii_uppercase());
        }
    }
    found
}

/// The `(METHOD, path)` pairs that `.route(...)` calls in `src` register under `prefix`.
fn routes_in(src: &str, prefix: &str) -> BTreeSet<(String, String)> {
    let tokens = tokenize(src);
    for unsupported in ["merge", "nest_service", "route_service"] {
        assert!(
            calls_named(&tokens, unsupported) == 0,
            "the router uses .{unsupported}(...): the route parser needs extending"
        );
    }
    let mut set = BTreeSet::new();
    for (path, router) in calls(&tokens, "route") {
        let methods = methods(router);
        assert!(!methods.is_empty(), "no method found for route {prefix}{path}");
        for m in methods {
            assert!(set.insert((m.clone(), format!("{prefix}{path}"))), "{m} {prefix}{path} twice");
        }
    }
    set
}

fn calls_named(tokens: &[Token], name: &str) -> usize {
    (0..tokens.len())
        .filter(|&i| {
            is_punct(tokens.get(i), '.')
                && is_ident(tokens.get(i + 1), name)
                && is_punct(tokens.get(i + 2), '(')
        })
        .count()
}

/// Every route the server registers: those in `src/http/mod.rs` and, for each
/// `.nest("/prefix", module::routes...)` there, those in `src/http/module.rs` under the prefix.
fn registered_routes() -> BTreeSet<(String, String)> {
    let http = crate_dir().join("src/http");
    let top = read(&http.join("mod.rs"));
    let mut all = routes_in(&top, "");
    let tokens = tokenize(&top);
    let nests = calls(&tokens, "nest");
    assert!(!nests.is_empty(), "mod.rs nests no routers: the route parser needs updating");
    for (prefix, rest) in nests {
        let module = match rest {
            [Token::Punct(','), Token::Ident(module), Token::Punct(':'), Token::Punct(':'), ..] => {
                module
            }
            _ => panic!(".nest(\"{prefix}\", ...) does not name a module's routes"),
        };
        let src = read(&http.join(format!("{module}.rs")));
        let nested = routes_in(&src, &prefix);
        assert!(!nested.is_empty(), "no routes found in src/http/{module}.rs");
        for route in nested {
            assert!(!all.contains(&route), "{route:?} registered twice");
            all.insert(route);
        }
    }
    all
}

fn openapi() -> Value {
    let path = crate_dir().join("../docs/openapi.json");
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut set = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().unwrap_or_else(|| panic!("path item {path} is an object"));
        for key in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            set.insert((key.to_ascii_uppercase(), path.clone()));
        }
    }
    set
}

/// Resolves a local `$ref` such as `#/components/schemas/ErrorBody`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

fn check_refs(doc: &Value, value: &Value, at: &str, bad: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && resolve(doc, r).is_none()
            {
                bad.push(format!("{at}: {r}"));
            }
            for (k, v) in map {
                check_refs(doc, v, &format!("{at}/{k}"), bad);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_refs(doc, v, &format!("{at}/{i}"), bad);
            }
        }
        _ => {}
    }
}

#[test]
fn openapi_document_matches_the_router() {
    let doc = openapi();
    let version = doc["openapi"].as_str().expect("an `openapi` version string");
    assert!(version.starts_with("3.1."), "OpenAPI {version}, expected 3.1.x");
    for key in ["title", "version"] {
        let v = doc["info"][key].as_str().unwrap_or_default();
        assert!(!v.is_empty(), "info.{key} is missing or empty");
    }

    let registered = registered_routes();
    let documented = documented_routes(&doc);
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "docs/openapi.json and the router disagree.\n  registered, not documented: \
         {undocumented:?}\n  documented, not registered: {missing:?}"
    );
    // The router surely has its well-known routes (guards against a parser that finds nothing).
    for (m, p) in [("GET", "/healthz"), ("GET", "/metrics"), ("POST", "/api/v1/device/checkin")] {
        assert!(registered.contains(&(m.to_owned(), p.to_owned())), "{m} {p} not found");
    }
}

#[test]
fn openapi_document_is_consistent() {
    let doc = openapi();
    let mut bad = Vec::new();
    check_refs(&doc, &doc, "", &mut bad);
    assert!(bad.is_empty(), "unresolved $ref: {bad:?}");

    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(operation_ids.insert(id.to_owned()), "{method} {path}: operationId {id:?}");
            let responses = op["responses"].as_object();
            assert!(responses.is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
            // Every `{param}` of the path is declared as a path parameter.
            let declared: BTreeSet<&str> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(op["parameters"].as_array())
                .flatten()
                .map(|p| match p["$ref"].as_str() {
                    Some(r) => resolve(&doc, r).unwrap(),
                    None => p,
                })
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert_eq!(declared, templated, "{method} {path}: path parameters");
        }
    }
}

#[test]
fn the_route_parser_survives_rustfmt_and_comments() {
    let src = r#"
        pub(super) fn routes<S: Store>() -> Router<Arc<Service<S>>> {
            Router::new()
                // .route("/commented-out", get(nothing))
                .route("/a", get(a::<S>))
                .route(
                    "/b/{id}",
                    get(b::<S>)
                        .patch(c::<S>),
                )
                /* .route("/block", post(x)) */
                .route("/c", delete(|| async { format!("({})", ')') }).post(d))
        }
    "#;
    let found = routes_in(src, "/p");
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/p/a"),
        ("GET", "/p/b/{id}"),
        ("PATCH", "/p/b/{id}"),
        ("DELETE", "/p/c"),
        ("POST", "/p/c"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(found, expected);
}
