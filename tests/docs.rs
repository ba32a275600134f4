//! The checked-in manual pages and completions match what the programs
//! (and, for cellfs.toml(5), the config types) generate, each page documents every command and option `--help` shows,
//! and every page renders with `man` without a warning. After changing a
//! command line, run `scripts/gen-docs`.

use cellfs::{COMMAND_TIMEOUT, bin, output_with_timeout};
use std::path::Path;
use std::process::Command;

/// (program, manual section).
const PROGRAMS: [(&str, &str); 3] = [
    ("cellfs-fileserver", "8"),
    ("cellfs-cachemanager", "8"),
    ("cellfs-vos", "1"),
];

fn run(program: &str, args: &[&str]) -> String {
    let out = output_with_timeout(Command::new(bin(program)).args(args), COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// cellfs.toml(5) as the config types make it.
fn settings_page() -> String {
    let cell = schemars::schema_for!(cellfs_protocol::config::CellConfig);
    let server = schemars::schema_for!(cellfs_fileserver::config::ServerConfig);
    let node = schemars::schema_for!(cellfs_cachemanager::settings::Settings);
    cellfs_cli_docs::settings::settings_page(
        env!("CARGO_PKG_VERSION"),
        cell.as_value(),
        server.as_value(),
        node.as_value(),
    )
}

/// The checked-in cellfs.toml(5) is the one the config types make;
/// `scripts/gen-docs` runs this with `CELLFS_WRITE_DOCS=1` to write it.
#[test]
fn the_settings_page_is_made_from_the_config_types() {
    let path = repo("man/cellfs.toml.5");
    let page = settings_page();
    if std::env::var_os("CELLFS_WRITE_DOCS").is_some() {
        std::fs::write(&path, &page).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == page,
        "man/cellfs.toml.5 is out of date: run scripts/gen-docs"
    );
}

#[test]
fn checked_in_pages_and_completions_are_current() {
    for (program, section) in PROGRAMS {
        for (what, file) in [
            ("man", format!("man/{program}.{section}")),
            ("bash", format!("completions/{program}.bash")),
            ("zsh", format!("completions/_{program}")),
            ("fish", format!("completions/{program}.fish")),
        ] {
            let checked_in = std::fs::read_to_string(repo(&file)).unwrap_or_default();
            assert!(
                checked_in == run(program, &["generate", what]),
                "{file} is out of date: run scripts/gen-docs"
            );
        }
    }
}

/// The commands and `--long` options a `--help` text lists.
fn help_items(help: &str) -> (Vec<String>, Vec<String>) {
    let (mut commands, mut options) = (Vec::new(), Vec::new());
    let mut in_commands = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            in_commands = line.starts_with("Commands:");
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if in_commands && !first.is_empty() && first != "help" {
            commands.push(first.to_owned());
        }
        for word in line.split_whitespace().take(3) {
            let name = word.trim_end_matches(',');
            if let Some(long) = name.strip_prefix("--").filter(|l| !l.is_empty()) {
                let long = long.split(['=', '<', ' ']).next().unwrap_or(long);
                if long != "help" && long != "version" {
                    options.push(long.to_owned());
                }
            }
        }
    }
    (commands, options)
}

#[test]
fn every_page_lists_every_command_and_option_of_help() {
    for (program, section) in PROGRAMS {
        let page = std::fs::read_to_string(repo(&format!("man/{program}.{section}"))).unwrap();
        let mut paths = vec![Vec::<String>::new()];
        let mut checked = 0;
        while let Some(path) = paths.pop() {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push("--help");
            let (commands, options) = help_items(&run(program, &args));
            for long in options {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    page.contains(&roff),
                    "{program} {path:?}: --{long} is not in its manual page"
                );
                checked += 1;
            }
            if !path.is_empty() {
                let heading = format!(".SS \"{program} {}\"", path.join(" "));
                assert!(
                    page.contains(&heading),
                    "{program} {path:?} has no section in its manual page"
                );
            }
            for c in commands {
                let mut sub = path.clone();
                sub.push(c);
                paths.push(sub);
            }
        }
        assert!(checked > 3, "{program}: found almost no options in --help");
    }
}

#[test]
fn pages_render_without_warnings() {
    for (program, section) in PROGRAMS {
        let file = repo(&format!("man/{program}.{section}"));
        let out = output_with_timeout(
            Command::new("man")
                .args(["--warnings", "-l"])
                .arg(&file)
                .env("MANWIDTH", "80")
                .env_remove("MAN_KEEP_FORMATTING"),
            COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "man -l {}", file.display());
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "COMMANDS",
            "FILES",
            "EXIT STATUS",
            "EXAMPLES",
        ] {
            assert!(text.contains(section), "{}: no {section} section", file.display());
        }
    }
}

/// The keys of the TOML table in `path`.
fn toml_keys(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table.keys().cloned().collect()
}

#[test]
fn the_settings_page_documents_every_key() {
    let page_path = repo("man/cellfs.toml.5");
    let page = std::fs::read_to_string(&page_path).unwrap();
    let documented = |key: &str| page.contains(&format!("\\fB{key}\\fR"));
    // What init writes, read back from a real cell.
    let cell = cellfs::Cell::new();
    for file in [cell.data_dir().join("server.toml"), cell.config_path()] {
        for key in toml_keys(&file) {
            assert!(documented(&key), "{key} of {} is not in cellfs.toml(5)", file.display());
        }
    }
    // Every flag of `mount` is a key of cachemanager.toml.
    let help = output_with_timeout(
        Command::new(bin("cellfs-cachemanager")).args(["mount", "--help"]),
        COMMAND_TIMEOUT,
    );
    let help = String::from_utf8_lossy(&help.stdout);
    for word in help.split_whitespace() {
        let Some(long) = word.trim_end_matches(',').strip_prefix("--") else {
            continue;
        };
        let key = match long {
            "help" | "settings" => continue,
            "no-passthrough" => "passthrough".to_owned(),
            other => other.replace('-', "_"),
        };
        assert!(documented(&key), "mount --{long} has no key {key} in cellfs.toml(5)");
    }
    // The example parses as the cache manager reads it.
    cellfs_cachemanager::settings::Settings::parse(cellfs_cli_docs::settings::EXAMPLE).expect("the example is valid");
    // It renders cleanly.
    let out = output_with_timeout(
        Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page_path)
            .env("MANWIDTH", "80")
            .env_remove("MAN_KEEP_FORMATTING"),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
