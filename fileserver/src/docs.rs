//! The parts of cellfs-fileserver(8) that `--help` does not hold.

use cellfs_cli_docs::Page;

/// The manual page's extra sections.
pub const PAGE: Page = Page {
    section: "8",
    description: &[
        "The fileserver keeps a cell's volumes: each volume's metadata in a redb database and file \
         contents in data files under the data folder. Cache managers (cellfs-cachemanager(8)) reach it \
         over QUIC with mutual TLS under the cell's own CA; it grants them callback promises on what they \
         cache and breaks the promises when something changes. The cell's first server also keeps the \
         VLDB (where each volume lives) and the cell's users, groups and issued credentials.",
    ],
    files: &[
        (
            "DATA/server.toml",
            "Settings of this server: listen address, promise lifetime, journal length and the limits on connections, streams and requests.",
        ),
        (
            "DATA/ca.pem, DATA/ca.key",
            "The cell's certificate authority; the key stays on the fileserver.",
        ),
        (
            "DATA/client/",
            "A host credential bundle (cell.toml, certificate, key) for cache managers.",
        ),
        (
            "DATA/admin/",
            "The admin credential bundle for cellfs-vos(1); keep it off web nodes.",
        ),
        ("DATA/lock", "Held while a server or the salvager works on the folder."),
        (
            "/lib/systemd/system/cellfs-fileserver.service",
            "The systemd unit (Type=notify: ready once it listens).",
        ),
    ],
    exit_status: &[
        (
            "0",
            "Success (serve: stopped by SIGINT or SIGTERM; salvage: clean, or clean after --repair).",
        ),
        ("1", "An error, described on standard error; salvage: problems remain."),
    ],
    examples: &[
        (
            "Bring up a cell on this machine:",
            "cellfs-fileserver init --data /var/lib/cellfs/server --cell example.org --listen 10.0.0.1:7000\nsystemctl enable --now cellfs-fileserver",
        ),
        (
            "Add a second fileserver to the cell (the first one running):",
            "cellfs-fileserver init --data /var/lib/cellfs/server --join /mnt/first-server-data --listen 10.0.0.2:7000",
        ),
        (
            "Recover from a server outage: check and mend the volumes, then serve again (cache managers revalidate what they hold):",
            "systemctl stop cellfs-fileserver\ncellfs-fileserver salvage --data /var/lib/cellfs/server --repair\nsystemctl start cellfs-fileserver",
        ),
    ],
    see_also: &["cellfs-cachemanager(8)", "cellfs-vos(1)", "systemd.service(5)"],
};
