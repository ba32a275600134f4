//! The parts of cellfs-cachemanager(8) that `--help` does not hold.

use cellfs_cli_docs::Page;

/// The manual page's extra sections.
pub const PAGE: Page = Page {
    section: "8",
    description: &[
        "The cache manager mounts a cellfs cell with FUSE on a web node and keeps whole files in a local \
         disk cache bounded by size (least recently used first out). Callback promises from the fileserver \
         keep the kernel's caches valid until something really changes, so cached reads cost what local \
         reads cost. When the fileserver is unreachable the node keeps serving what it has cached and \
         refuses changes (EROFS) until the server is back.",
        "Linked as mount.fuse.cellfs it is also the mount(8) helper for the fuse.cellfs type: mount -t \
         fuse.cellfs CELL.TOML DIR -o OPTIONS, or an /etc/fstab line. Options: cache=DIR, cache_size=SIZE, \
         threads=N, request_timeout=SECONDS, log=FILE, no_passthrough; the generic ones (_netdev, nofail, \
         noauto, x-systemd.*...) are left to mount(8).",
        "The other commands talk to a running cache manager through the control socket in its cache folder.",
    ],
    files: &[
        (
            "/etc/cellfs/cell.toml",
            "The cell config of a host credential bundle (cellfs-vos host add).",
        ),
        (
            "CACHE/",
            "The cache folder: cached copies, the saved index, the control socket, unstored/ for writes whose store found the fileserver unreachable (stored when it answers), lost+found/ for those it then refused, cachemanager.log when started by mount(8).",
        ),
        (
            "/sbin/mount.fuse.cellfs",
            "A link to cellfs-cachemanager: the mount(8) helper.",
        ),
        (
            "/lib/systemd/system/cellfs-cachemanager@.service",
            "One mount per instance (cellfs-cachemanager@srv-www mounts /srv/www); Type=notify, ready once the mount serves.",
        ),
    ],
    exit_status: &[
        ("0", "Success (mount: unmounted by umount, SIGINT or SIGTERM)."),
        (
            "1",
            "An error, described on standard error (or in the log when started by mount(8)).",
        ),
    ],
    examples: &[
        (
            "Add a web node: issue its credential on an admin host, copy the bundle, mount:",
            "cellfs-vos host add web3 --out /tmp/web3\nscp -r /tmp/web3 web3:/etc/cellfs\ncellfs-cachemanager mount --config /etc/cellfs/cell.toml --cache /var/cache/cellfs/www --cache-size 8GiB /srv/www",
        ),
        (
            "Mount from /etc/fstab:",
            "/etc/cellfs/cell.toml /srv/www fuse.cellfs _netdev,nofail,cache=/var/cache/cellfs/www,cache_size=8GiB 0 0",
        ),
        (
            "Keep a site served through a fileserver outage, and see the node's state:",
            "cellfs-cachemanager pin --cache /var/cache/cellfs/www /srv/www/example.org\ncellfs-cachemanager status --cache /var/cache/cellfs/www",
        ),
        (
            "Let only the site's group write its uploads:",
            "cellfs-cachemanager setacl --cache /var/cache/cellfs/www /srv/www/example.org/uploads site1 write system:anyuser read",
        ),
    ],
    see_also: &["cellfs-fileserver(8)", "cellfs-vos(1)", "mount(8)", "fstab(5)"],
};
