//! The parts of cellfs-vos(1) that `--help` does not hold.

use cellfs_cli_docs::Page;

/// The manual page's extra sections.
pub const PAGE: Page = Page {
    section: "1",
    description: &[
        "cellfs-vos administers the volumes of a cellfs cell like OpenAFS vos: it creates, lists and examines \
         volumes, sets quotas, makes mount points, backup clones, read-only replicas and releases, dumps and \
         restores, and manages the cell's credentials, users and groups. Commands that change a volume or \
         the cell need the admin credential; a host credential may list and examine.",
    ],
    files: &[(
        "DATA/admin/cell.toml",
        "The admin credential bundle made by cellfs-fileserver init (or cellfs-vos host add --admin); pass it with --config or CELLFS_CONFIG.",
    )],
    exit_status: &[("0", "Success."), ("1", "An error, described on standard error.")],
    examples: &[
        (
            "Create a site volume with a 10 GiB quota and mount it in the cell's tree:",
            "export CELLFS_CONFIG=/var/lib/cellfs/server/admin/cell.toml\ncellfs-vos create site.example --quota 10GiB\ncellfs-vos mkmount /example.org site.example",
        ),
        (
            "Serve a site from read-only replicas and publish a new version:",
            "cellfs-vos addsite site.example 10.0.0.2:7000\ncellfs-vos release site.example",
        ),
        (
            "Nightly backup clone and a dump of it:",
            "cellfs-vos backup site.example\ncellfs-vos dump site.example.backup --file /backup/site.example.dump",
        ),
        (
            "Add a web node's credential, and revoke a lost one:",
            "cellfs-vos host add web3 --out /tmp/web3\ncellfs-vos host revoke web1",
        ),
    ],
    see_also: &["cellfs-fileserver(8)", "cellfs-cachemanager(8)"],
};

/// The manual page or completions of `cellfs-vos`.
pub fn text(what: cellfs_cli_docs::Generate) -> String {
    use clap::CommandFactory;
    cellfs_cli_docs::generate(crate::cli::Cli::command(), &PAGE, what)
}
