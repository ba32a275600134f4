//! cellfs.toml(5), the manual page of the three settings files, made from
//! the JSON schemas (schemars) of the types that read them: each key, its
//! type and default come from the type, its text from the field's doc
//! comment, so a key cannot be added without its page changing.

use clap_mangen::roff::{Inline, Roff, bold, roman};
use serde_json::Value;

const NAME: &str = "cellfs.toml - the settings files of cellfs: cell.toml, server.toml and cachemanager.toml";

const DESCRIPTION: &str = "cellfs reads three TOML files. Each refuses an unknown key or a bad value \
before anything starts, with the file, the line and the key named. Where a setting is also a \
command-line flag, the flag wins over the file.";

const CELL_TOML: &str = "The cell config of a credential bundle, written by `cellfs-fileserver init` \
(the client/ and admin/ bundles) and by `cellfs-vos host add`. `cellfs-cachemanager` and \
`cellfs-vos` take it with `--config`. Relative paths are resolved against the file's folder.";

const SERVER_TOML: &str = "DATA/server.toml, written by `cellfs-fileserver init` and read by \
`serve`. `serve --listen`, `--journal-len` and `--metrics` win over it. The data folder is the \
one setting it cannot hold: it is where the file lives (`serve --data`).";

const CACHEMANAGER_TOML: &str = "The file `cellfs-cachemanager mount --settings FILE` reads \
(packages use /etc/cellfs/cachemanager.toml). Each key is a flag of `mount`; a flag given on the \
command line wins.";

/// The example cachemanager.toml (tests parse it as the cache manager does).
pub const EXAMPLE: &str = r#"config = "/etc/cellfs/cell.toml"
cache = "/var/cache/cellfs/www"
cache_size = "8GiB"
mountpoint = "/srv/www"
pin = ["/example.org/wp-includes"]"#;

/// The page, from the schemas of the types that read cell.toml,
/// server.toml and cachemanager.toml.
pub fn settings_page(version: &str, cell: &Value, server: &Value, cachemanager: &Value) -> String {
    let mut roff = Roff::new();
    roff.control("TH", ["cellfs.toml", "5", "", &format!("cellfs {version}"), "cellfs"]);
    roff.control("SH", ["NAME"]).text([roman(NAME)]);
    roff.control("SH", ["DESCRIPTION"]).text([roman(DESCRIPTION)]);
    for (title, about, schema) in [
        ("CELL.TOML", CELL_TOML, cell),
        ("SERVER.TOML", SERVER_TOML, server),
        ("CACHEMANAGER.TOML", CACHEMANAGER_TOML, cachemanager),
    ] {
        roff.control("SH", [title]).text(code_spans(about));
        let keys = schema.get("properties").and_then(Value::as_object);
        for (key, prop) in keys.into_iter().flatten() {
            roff.control("TP", [])
                .text([bold(key.as_str()), roman(format!(" ({})", kind(prop)))]);
            let text = prop.get("description").and_then(Value::as_str).unwrap_or("");
            roff.text(code_spans(&text.replace('\n', " ")));
        }
    }
    roff.control("SH", ["EXAMPLES"]);
    crate::example(&mut roff, "A web node's /etc/cellfs/cachemanager.toml:", EXAMPLE);
    crate::see_also(
        &mut roff,
        &["cellfs-fileserver(8)", "cellfs-cachemanager(8)", "cellfs-vos(1)"],
    );
    roff.to_roff()
}

/// A key's type, whether it may be left out, and its default.
fn kind(prop: &Value) -> String {
    let types: Vec<&str> = match prop.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut words: Vec<String> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "array" => match prop.pointer("/items/type").and_then(Value::as_str) {
                Some(item) => format!("list of {item}s"),
                None => "list".to_owned(),
            },
            "boolean" => "true or false".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    if words.is_empty() {
        words.push("value".to_owned());
    }
    let mut out = words.join(" or ");
    match prop.get("default") {
        Some(Value::Null) | Some(Value::Array(_)) => out.push_str(", optional"),
        Some(d) => out.push_str(&format!(", default {d}")),
        None if types.contains(&"null") => out.push_str(", optional"),
        None => {}
    }
    out
}

/// `text` with its `code spans` in bold.
fn code_spans(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_types_defaults_and_text_come_from_the_schema() {
        let schema = serde_json::json!({
            "properties": {
                "listen": {"type": "string", "description": "Where to listen (`host:port`)."},
                "max_requests": {"type": "integer", "default": 4096, "description": "Most requests."},
                "cert": {"type": ["string", "null"], "description": "A certificate."},
                "pin": {"type": "array", "items": {"type": "string"}, "default": [], "description": "Paths."}
            }
        });
        let empty = serde_json::json!({});
        let page = settings_page("1.0", &empty, &schema, &empty);
        for needle in [
            ".TH cellfs.toml 5",
            ".SH SERVER.TOML",
            "\\fBlisten\\fR (string)",
            "Where to listen (\\fBhost:port\\fR).",
            "\\fBmax_requests\\fR (integer, default 4096)",
            "\\fBcert\\fR (string, optional)",
            "\\fBpin\\fR (list of strings, optional)",
            ".SH EXAMPLES",
        ] {
            assert!(page.contains(needle), "{needle:?} missing from:\n{page}");
        }
    }
}
