# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cellfs_cachemanager_global_optspecs
    string join \n h/help
end

function __fish_cellfs_cachemanager_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cellfs_cachemanager_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cellfs_cachemanager_using_subcommand
    set -l cmd (__fish_cellfs_cachemanager_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -s h -l help -d 'Print help'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "pin" -d 'Fetch the subtree at PATH completely and keep it from eviction, so the node can serve it while the fileserver is unreachable'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "unpin" -d 'Let a pinned subtree be evicted again'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "status" -d 'Show the state of the running cache manager that uses a cache folder: server up/down and since when, cache used/limit, files cached, promises held, files and folders known, last revalidation'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "setacl" -d 'Change the ACL of a directory (like AFS `fs setacl`): each NAME RIGHTS pair sets one entry; NAME is a user or group of the cell, `system:anyuser`, `system:authuser`, `uid:N` or `gid:N`; RIGHTS are letters of `rlidwka` or `read`, `write`, `all`, `none` (removes it)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "listacl" -d 'Show the ACL of a directory (like AFS `fs listacl`)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "whereis" -d 'Show the volume a path is in, its type (RW, RO, backup) and its servers (like AFS `fs whereis`)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "examine" -d 'Show what the node knows of a path: FID, kind, size, version, owner, mode, whether it is cached and for how long it is promised'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "listquota" -d 'Show the quota and usage of the volume a path is in'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "flush" -d 'Drop what the node cached of a path (a file, or a directory\'s listing and the files in it); the next use fetches it again'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "flushvolume" -d 'Drop everything the node cached of the volume a path is in (root)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "checkservers" -d 'Probe every fileserver of the cell now and show which answer'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "getcacheparms" -d 'Show the cache\'s size limit and use'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "setcachesize" -d 'Change the cache\'s size limit at once, evicting down to it (root)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "mount" -d 'Mount the cell and serve it in the foreground until SIGINT/SIGTERM. Every flag may come from a settings file instead (--settings); a flag given here wins over the file'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand pin" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand pin" -s h -l help -d 'Print help'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand unpin" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand unpin" -s h -l help -d 'Print help'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand status" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand status" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand setacl" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand setacl" -l negative -d 'Set negative entries (rights taken away whatever else grants them)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand setacl" -l clear -d 'Start from an empty ACL instead of the current one'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand setacl" -s h -l help -d 'Print help'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand listacl" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand listacl" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand listacl" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand whereis" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand whereis" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand whereis" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand examine" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand examine" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand examine" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand listquota" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand listquota" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand listquota" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand flush" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand flush" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand flush" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand flushvolume" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand flushvolume" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand flushvolume" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand checkservers" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand checkservers" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand checkservers" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand getcacheparms" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand getcacheparms" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand getcacheparms" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand setcachesize" -l cache -d 'The cache folder the mount was started with' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand setcachesize" -l format -d 'Output format' -r -f -a "text\t'For people'
json\t'For scripts'"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand setcachesize" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l settings -d 'A settings file (TOML) with any of these flags as keys (config, cache, cache_size, threads, request_timeout, passthrough, mountpoint, metrics, pin); see cellfs.toml(5)' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l config -d 'The cell config (the client bundle\'s cell.toml)' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l cache -d 'Folder for the disk cache' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l cache-size -d 'Cache size limit, e.g. 2GiB (1GiB when neither flag nor file says)' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l threads -d 'FUSE worker threads: how many requests that wait on the fileserver (creates, closes that store) run at once (16 when neither flag nor file says)' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l request-timeout -d 'Seconds a request may take before the fileserver counts as down and the node serves its cache read-only (2 when neither flag nor file says)' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l pin -d 'Pin this path (from the mount root) once mounted, as `pin` does; may be given more than once (added to the file\'s)' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l metrics -d 'Where to serve Prometheus metrics (http://ADDR/metrics), or `off` (127.0.0.1:9471 when neither flag nor file says)' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l no-passthrough -d 'Serve every read through the cache manager instead of letting the kernel read cached files directly (FUSE passthrough)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -s h -l help -d 'Print help'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "pin" -d 'Fetch the subtree at PATH completely and keep it from eviction, so the node can serve it while the fileserver is unreachable'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "unpin" -d 'Let a pinned subtree be evicted again'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "status" -d 'Show the state of the running cache manager that uses a cache folder: server up/down and since when, cache used/limit, files cached, promises held, files and folders known, last revalidation'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "setacl" -d 'Change the ACL of a directory (like AFS `fs setacl`): each NAME RIGHTS pair sets one entry; NAME is a user or group of the cell, `system:anyuser`, `system:authuser`, `uid:N` or `gid:N`; RIGHTS are letters of `rlidwka` or `read`, `write`, `all`, `none` (removes it)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "listacl" -d 'Show the ACL of a directory (like AFS `fs listacl`)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "whereis" -d 'Show the volume a path is in, its type (RW, RO, backup) and its servers (like AFS `fs whereis`)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "examine" -d 'Show what the node knows of a path: FID, kind, size, version, owner, mode, whether it is cached and for how long it is promised'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "listquota" -d 'Show the quota and usage of the volume a path is in'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "flush" -d 'Drop what the node cached of a path (a file, or a directory\'s listing and the files in it); the next use fetches it again'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "flushvolume" -d 'Drop everything the node cached of the volume a path is in (root)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "checkservers" -d 'Probe every fileserver of the cell now and show which answer'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "getcacheparms" -d 'Show the cache\'s size limit and use'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "setcachesize" -d 'Change the cache\'s size limit at once, evicting down to it (root)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "mount" -d 'Mount the cell and serve it in the foreground until SIGINT/SIGTERM. Every flag may come from a settings file instead (--settings); a flag given here wins over the file'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl whereis examine listquota flush flushvolume checkservers getcacheparms setcachesize mount help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
