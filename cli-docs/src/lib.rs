//! Manual pages and shell completions made from the clap definitions of the
//! cellfs programs, so neither can drift from `--help`. Each program has a
//! hidden `generate` command that prints them; `scripts/gen-docs` writes
//! them to `man/` and `completions/`, and a test fails when the checked-in
//! copies differ from what the programs generate.

pub mod settings;

use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

/// The parts of a manual page that `--help` does not hold.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// Manual section: "1" for commands, "8" for daemons.
    pub section: &'a str,
    /// Paragraphs after the generated description.
    pub description: &'a [&'a str],
    /// (path, what it is).
    pub files: &'a [(&'a str, &'a str)],
    /// (status, meaning).
    pub exit_status: &'a [(&'a str, &'a str)],
    /// (what it does, the command lines).
    pub examples: &'a [(&'a str, &'a str)],
    /// Related pages, e.g. "cellfs-vos(1)".
    pub see_also: &'a [&'a str],
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The manual page (roff).
    Man,
    /// bash completions.
    Bash,
    /// zsh completions.
    Zsh,
    /// fish completions.
    Fish,
}

/// The manual page or completions of `cmd`.
pub fn generate(cmd: clap::Command, page: &Page, what: Generate) -> String {
    let shell = match what {
        Generate::Man => return man_page(cmd, page),
        Generate::Bash => clap_complete::Shell::Bash,
        Generate::Zsh => clap_complete::Shell::Zsh,
        Generate::Fish => clap_complete::Shell::Fish,
    };
    // clap_complete offers hidden commands too: leave them out.
    let mut cmd = clap::Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The whole manual page of `cmd`: name, synopsis, description, options,
/// every command with its own options, then files, exit status, examples.
pub fn man_page(cmd: clap::Command, page: &Page) -> String {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section(page.section)
        .source(format!("cellfs {}", cmd.get_version().unwrap_or_default()))
        .manual("cellfs");
    let mut out = Vec::new();
    let rendered = man
        .render_title(&mut out)
        .and_then(|()| man.render_name_section(&mut out))
        .and_then(|()| man.render_synopsis_section(&mut out))
        .and_then(|()| man.render_description_section(&mut out));
    let mut roff = Roff::new();
    for p in page.description {
        roff.control("PP", []).text([roman(*p)]);
    }
    let global: Vec<&clap::Arg> = visible_args(&cmd).collect();
    if !global.is_empty() {
        roff.control("SH", ["OPTIONS"]);
        for a in global {
            arg(&mut roff, a);
        }
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        roff.control("SH", ["COMMANDS"]);
        commands(&mut roff, &cmd);
    }
    list(&mut roff, "FILES", page.files);
    list(&mut roff, "EXIT STATUS", page.exit_status);
    if !page.examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (what, lines) in page.examples {
            example(&mut roff, what, lines);
        }
    }
    if !page.see_also.is_empty() {
        see_also(&mut roff, page.see_also);
    }
    rendered.expect("rendering into memory cannot fail");
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push_str(&roff.to_roff());
    text
}

/// The options and arguments `cmd` itself documents.
fn visible_args(cmd: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
}

/// Each visible subcommand of `cmd`, depth first, with its usage, text and
/// own options.
fn commands(roff: &mut Roff, cmd: &clap::Command) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut usage_of = sub.clone();
        let usage = usage_of.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        roff.control("SS", [sub.get_bin_name().unwrap_or(sub.get_name())]);
        roff.text([bold(usage)]);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            roff.control("PP", []).text([roman(about.to_string())]);
        }
        for a in visible_args(sub).filter(|a| !a.is_global_set()) {
            arg(roff, a);
        }
        commands(roff, sub);
    }
}

/// One option or argument: its flags and value, then its help.
fn arg(roff: &mut Roff, a: &clap::Arg) {
    let mut head: Vec<Inline> = Vec::new();
    let value = a
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
    if a.is_positional() {
        head.push(italic(value));
    } else {
        if let Some(s) = a.get_short() {
            head.push(bold(format!("-{s}")));
        }
        if let Some(l) = a.get_long() {
            if !head.is_empty() {
                head.push(roman(", "));
            }
            head.push(bold(format!("--{l}")));
        }
        if a.get_action().takes_values() {
            head.push(roman(" "));
            head.push(italic(value));
        }
    }
    roff.control("TP", []).text(head);
    let mut help = a
        .get_long_help()
        .or(a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && a.get_action().takes_values() {
        help.push_str(&format!(" [default: {}]", defaults.join(", ")));
    }
    let possible: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_owned())
        .collect();
    if !possible.is_empty() && a.get_action().takes_values() {
        help.push_str(&format!(" [possible values: {}]", possible.join(", ")));
    }
    if let Some(env) = a.get_env() {
        help.push_str(&format!(" [env: {}]", env.to_string_lossy()));
    }
    roff.text([roman(help)]);
}

/// One example: what it does, then its lines as typed.
fn example(roff: &mut Roff, what: &str, lines: &str) {
    roff.control("PP", []).text([roman(what)]);
    roff.control("PP", []).control("RS", ["4"]).control("nf", []);
    for line in lines.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []).control("RE", []);
}

/// The SEE ALSO section naming `pages`.
fn see_also(roff: &mut Roff, pages: &[&str]) {
    roff.control("SH", ["SEE ALSO"]).text([roman(pages.join(", "))]);
}

fn list(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    if items.is_empty() {
        return;
    }
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", []).text([bold(*term)]).text([roman(*text)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn demo() -> Command {
        Command::new("demo")
            .version("1.0")
            .about("Does demo things.")
            .arg(
                Arg::new("config")
                    .long("config")
                    .short('c')
                    .global(true)
                    .help("The config"),
            )
            .subcommand(
                Command::new("run")
                    .about("Run it.")
                    .arg(Arg::new("fast").long("fast").action(ArgAction::SetTrue).help("Go fast"))
                    .arg(Arg::new("path").required(true).help("Where"))
                    .subcommand(Command::new("deep").about("Deeper.").arg(Arg::new("n").long("count"))),
            )
            .subcommand(Command::new("generate").hide(true))
    }

    #[test]
    fn every_command_and_option_is_in_the_page() {
        let page = Page {
            section: "1",
            description: &["More words."],
            files: &[("/etc/demo", "Its config.")],
            exit_status: &[("0", "Success.")],
            examples: &[("Run it:", "demo run /x\ndemo run --fast /y")],
            see_also: &["cellfs-vos(1)"],
        };
        let text = man_page(demo(), &page);
        for needle in [
            ".TH demo 1",
            "\\-\\-config",
            ".SS \"demo run\"",
            "\\-\\-fast",
            "\\fIPATH\\fR",
            ".SS \"demo run deep\"",
            "\\-\\-count",
            ".SH FILES",
            ".SH \"EXIT STATUS\"",
            ".SH EXAMPLES",
            "demo run \\-\\-fast /y",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("generate"), "a hidden command was documented");
    }

    #[test]
    fn completions_cover_the_commands() {
        let page = Page {
            section: "1",
            description: &[],
            files: &[],
            exit_status: &[],
            examples: &[],
            see_also: &[],
        };
        let bash = generate(demo(), &page, Generate::Bash);
        assert!(bash.contains("run") && bash.contains("--fast"), "{bash}");
        assert!(!bash.contains("generate"), "a hidden command is offered");
        assert!(generate(demo(), &page, Generate::Fish).contains("fast"));
        assert!(generate(demo(), &page, Generate::Zsh).contains("fast"));
    }
}
