//! Command-line arguments of `cellfs-vos`.

use crate::size::parse_quota;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Administer the volumes of a cellfs cell.
#[derive(Debug, Parser)]
#[command(name = "cellfs-vos", version, about, long_about = None)]
pub struct Cli {
    /// The cell's admin config (`cell.toml` from the fileserver's `admin/`
    /// bundle; a host credential may only list and examine).
    #[arg(
        long,
        short = 'c',
        env = "CELLFS_CONFIG",
        global = true,
        value_name = "CELLCONF",
        help_heading = "Cell options"
    )]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of the commands that describe volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON, for scripts.
    Json,
}

/// The `cellfs-vos` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this program's manual page or shell completions (used to make
    /// the checked-in man/ and completions/).
    #[command(hide = true)]
    Generate {
        /// What to print.
        #[arg(value_enum)]
        what: cellfs_cli_docs::Generate,
    },
    /// Create a volume.
    Create {
        /// Volume name: 1-64 letters, digits, '.', '_' or '-'.
        name: String,
        /// Quota, e.g. `10GiB` or `500MB`; 0 or omitted means unlimited.
        #[arg(long, value_parser = parse_quota, default_value = "0", help_heading = "Volume options")]
        quota: u64,
        /// The fileserver to act on (host:port); the cell's fileserver when omitted.
        #[arg(long, value_name = "SERVER")]
        server: Option<String>,
    },
    /// List the cell's volumes.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// The fileserver to act on (host:port); the cell's fileserver when omitted.
        #[arg(long, value_name = "SERVER")]
        server: Option<String>,
    },
    /// List the volume location database: each volume with its read-only
    /// and backup clones and their sites.
    #[command(name = "listvldb")]
    ListVldb {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Compare the volume location database with what the fileserver holds
    /// and mend dangling clone references.
    #[command(name = "syncvldb")]
    SyncVldb,
    /// Describe one volume.
    Examine {
        /// Volume name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete a volume and everything in it.
    Remove {
        /// Volume name.
        name: String,
    },
    /// Change a volume's quota.
    #[command(name = "setquota")]
    SetQuota {
        /// Volume name.
        name: String,
        /// New quota, e.g. `10GiB`; 0 means unlimited.
        #[arg(value_parser = parse_quota)]
        quota: u64,
    },
    /// Create a mount point for a volume at a path of the cell.
    #[command(name = "mkmount")]
    MkMount {
        /// Path of the new mount point from the cell root, e.g. `/sites/www`.
        path: String,
        /// Volume the mount point shows.
        name: String,
        /// A read-write mount point: always shows the read-write volume. A
        /// regular one shows the released read-only copy when there is one.
        #[arg(long)]
        rw: bool,
    },
    /// Move a read-write volume to another fileserver of the cell; nodes
    /// follow it without a remount.
    Move {
        /// Volume name.
        name: String,
        /// The fileserver to move it to (host:port).
        #[arg(long)]
        to: String,
    },
    /// Add a read-only site for a volume on a fileserver; `release` fills it.
    #[command(name = "addsite")]
    AddSite {
        /// Volume name.
        name: String,
        /// The fileserver's address (host:port), as `examine` shows it.
        server: String,
    },
    /// Remove a read-only site of a volume (the last one takes the read-only copy with it).
    #[command(name = "remsite")]
    RemSite {
        /// Volume name.
        name: String,
        /// The fileserver's address.
        server: String,
    },
    /// Release a volume: its read-only sites get a snapshot of it, all at
    /// once, and every node reading it through a regular mount point sees it.
    Release {
        /// Volume name.
        name: String,
    },
    /// Rename a volume (its backup clone follows). Mount points name volumes:
    /// make those naming the old name again.
    Rename {
        /// Current name.
        name: String,
        /// New name.
        new_name: String,
    },
    /// Lock a volume: admin operations on it are refused until `unlock`.
    Lock {
        /// Volume name.
        name: String,
    },
    /// Release a volume's lock.
    Unlock {
        /// Volume name.
        name: String,
    },
    /// Make (or remake) the read-only clone NAME.backup of a volume: a
    /// snapshot that shares unchanged data with the volume.
    Backup {
        /// Volume name.
        name: String,
    },
    /// Write a checksummed dump of a volume (docs/DUMP-FORMAT.md).
    Dump {
        /// Volume name.
        name: String,
        /// Where to write the dump (default: standard output).
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        /// Incremental: only the contents of files changed since this time
        /// (RFC 3339, e.g. `2026-11-29T06:00:00Z`, or `@UNIX_SECONDS`).
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        since: Option<cellfs_protocol::Timestamp>,
    },
    /// Restore a dump as a volume: a full dump makes a new volume (or
    /// replaces one with --overwrite); an incremental dump updates the volume
    /// it was taken from.
    Restore {
        /// Volume name.
        name: String,
        /// The dump to read.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        /// Replace the volume if it exists.
        #[arg(long)]
        overwrite: bool,
        /// The fileserver to act on (host:port); the cell's fileserver when omitted.
        #[arg(long, value_name = "SERVER")]
        server: Option<String>,
    },
    /// Credentials of web nodes, admins and fileservers (mutual TLS).
    Host {
        /// What to do.
        #[command(subcommand)]
        action: HostCommand,
    },
    /// Users of the cell (like AFS `pts`): names for the uids web nodes use.
    User {
        /// What to do.
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Groups of the cell, for directory ACLs.
    Group {
        /// What to do.
        #[command(subcommand)]
        action: GroupCommand,
    },
}

/// `cellfs-vos host ...`
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Issue a credential and write its bundle (ca.pem, client.pem,
    /// client.key, cell.toml) into a new folder.
    Add {
        /// The name it is issued to (e.g. the web node's host name).
        name: String,
        /// The folder to write the bundle into (must not exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// An admin credential (for `cellfs-vos`) instead of a host one.
        #[arg(long)]
        admin: bool,
    },
    /// Revoke every credential issued to a name: its connections are closed
    /// and refused from then on.
    Revoke {
        /// The name.
        name: String,
    },
    /// List the credentials the cell issued.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// `cellfs-vos user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with the uid web nodes run its processes as.
    Add {
        /// User name.
        name: String,
        /// Its uid on the web nodes.
        #[arg(long)]
        uid: u32,
    },
    /// Remove a user (and its group memberships).
    Remove {
        /// User name.
        name: String,
    },
    /// List the users.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// `cellfs-vos group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Add a group with the gid web nodes know it by.
    Add {
        /// Group name.
        name: String,
        /// Its gid on the web nodes.
        #[arg(long)]
        gid: u32,
    },
    /// Remove a group.
    Remove {
        /// Group name.
        name: String,
    },
    /// Add or remove members.
    Member {
        /// What to do.
        #[command(subcommand)]
        action: MemberCommand,
    },
    /// List the groups and their members.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// `cellfs-vos group member ...`
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a user to a group.
    Add {
        /// Group name.
        group: String,
        /// User name.
        user: String,
    },
    /// Remove a user from a group.
    Remove {
        /// Group name.
        group: String,
        /// User name.
        user: String,
    },
}

/// Parses `--since`: RFC 3339 (UTC) or `@` and Unix seconds.
pub fn parse_time(text: &str) -> Result<cellfs_protocol::Timestamp, String> {
    if let Some(secs) = text.strip_prefix('@') {
        let secs: i64 = secs.parse().map_err(|_| format!("{text:?}: expected @UNIX_SECONDS"))?;
        return Ok(cellfs_protocol::Timestamp { secs, nanos: 0 });
    }
    humantime::parse_rfc3339_weak(text)
        .map(cellfs_protocol::Timestamp::from)
        .map_err(|e| format!("{text:?}: {e} (expected e.g. 2026-11-29T06:00:00Z or @1795932000)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cellfs-vos").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_with_and_without_quota() {
        let cli = parse(&["--config", "/c/cell.toml", "create", "site.www", "--quota", "10GiB"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("/c/cell.toml")));
        match cli.command {
            Command::Create { name, quota, .. } => {
                assert_eq!(name, "site.www");
                assert_eq!(quota, 10 << 30);
            }
            other => panic!("parsed {other:?}"),
        }
        match parse(&["create", "v"]).unwrap().command {
            Command::Create { quota, .. } => assert_eq!(quota, 0),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn config_is_global() {
        let cli = parse(&["list", "--config", "x.toml", "--format", "json"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        assert!(matches!(
            cli.command,
            Command::List {
                format: Format::Json,
                ..
            }
        ));
        assert!(matches!(
            parse(&["list", "--server", "h:1"]).unwrap().command,
            Command::List { server: Some(_), .. }
        ));
        assert!(matches!(
            parse(&["listvldb"]).unwrap().command,
            Command::ListVldb { .. }
        ));
        assert!(matches!(parse(&["syncvldb"]).unwrap().command, Command::SyncVldb));
    }

    #[test]
    fn subcommand_names() {
        assert!(matches!(
            parse(&["setquota", "v", "1MiB"]).unwrap().command,
            Command::SetQuota { quota: 1_048_576, .. }
        ));
        assert!(matches!(
            parse(&["mkmount", "/sites/www", "site.www"]).unwrap().command,
            Command::MkMount { .. }
        ));
        assert!(matches!(
            parse(&["examine", "v"]).unwrap().command,
            Command::Examine {
                format: Format::Text,
                ..
            }
        ));
        assert!(matches!(
            parse(&["remove", "v"]).unwrap().command,
            Command::Remove { .. }
        ));
    }

    #[test]
    fn admin_subcommands() {
        assert!(matches!(
            parse(&["rename", "a", "b"]).unwrap().command,
            Command::Rename { .. }
        ));
        assert!(matches!(parse(&["lock", "a"]).unwrap().command, Command::Lock { .. }));
        assert!(matches!(
            parse(&["backup", "a"]).unwrap().command,
            Command::Backup { .. }
        ));
        match parse(&["dump", "v", "--since", "@100"]).unwrap().command {
            Command::Dump { since, file, .. } => {
                assert_eq!(since, Some(cellfs_protocol::Timestamp { secs: 100, nanos: 0 }));
                assert_eq!(file, None);
            }
            other => panic!("parsed {other:?}"),
        }
        match parse(&["dump", "v", "--since", "1970-01-01T00:01:40Z"])
            .unwrap()
            .command
        {
            Command::Dump { since, .. } => assert_eq!(since.map(|t| t.secs), Some(100)),
            other => panic!("parsed {other:?}"),
        }
        assert!(parse(&["dump", "v", "--since", "yesterday"]).is_err());
        assert!(parse(&["restore", "v"]).is_err(), "restore needs --file");
        assert!(matches!(
            parse(&["restore", "v", "-f", "x", "--overwrite"]).unwrap().command,
            Command::Restore { overwrite: true, .. }
        ));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["create", "v", "--quota", "lots"]).is_err());
        assert!(parse(&["setquota", "v"]).is_err());
        assert!(parse(&["list", "--format", "yaml"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }
}
