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
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "pin" -d 'Show the state of the running cache manager that uses a cache folder: server up/down and since when, cache used/limit, files cached, promises held, last revalidation. Fetch the subtree at PATH completely and keep it from eviction, so the node can serve it while the fileserver is unreachable'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "unpin" -d 'Let a pinned subtree be evicted again'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "status"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "setacl" -d 'Change the ACL of a directory (like AFS `fs setacl`): each NAME RIGHTS pair sets one entry; NAME is a user or group of the cell, `system:anyuser`, `system:authuser`, `uid:N` or `gid:N`; RIGHTS are letters of `rlidwka` or `read`, `write`, `all`, `none` (removes it)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "listacl" -d 'Show the ACL of a directory (like AFS `fs listacl`)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_needs_command" -f -a "mount" -d 'Mount the cell and serve it in the foreground until SIGINT/SIGTERM'
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
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l config -d 'The cell config (the client bundle\'s cell.toml)' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l cache -d 'Folder for the disk cache' -r -F
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l cache-size -d 'Cache size limit, e.g. 2GiB' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l threads -d 'FUSE worker threads' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l request-timeout -d 'Seconds a request may take before the fileserver counts as down and the node serves its cache read-only' -r
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -l no-passthrough -d 'Serve every read through the cache manager instead of letting the kernel read cached files directly (FUSE passthrough)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand mount" -s h -l help -d 'Print help'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl mount help" -f -a "pin" -d 'Show the state of the running cache manager that uses a cache folder: server up/down and since when, cache used/limit, files cached, promises held, last revalidation. Fetch the subtree at PATH completely and keep it from eviction, so the node can serve it while the fileserver is unreachable'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl mount help" -f -a "unpin" -d 'Let a pinned subtree be evicted again'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl mount help" -f -a "status"
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl mount help" -f -a "setacl" -d 'Change the ACL of a directory (like AFS `fs setacl`): each NAME RIGHTS pair sets one entry; NAME is a user or group of the cell, `system:anyuser`, `system:authuser`, `uid:N` or `gid:N`; RIGHTS are letters of `rlidwka` or `read`, `write`, `all`, `none` (removes it)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl mount help" -f -a "listacl" -d 'Show the ACL of a directory (like AFS `fs listacl`)'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl mount help" -f -a "mount" -d 'Mount the cell and serve it in the foreground until SIGINT/SIGTERM'
complete -c cellfs-cachemanager -n "__fish_cellfs_cachemanager_using_subcommand help; and not __fish_seen_subcommand_from pin unpin status setacl listacl mount help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
